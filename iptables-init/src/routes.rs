//! Policy routing for TPROXY and the `::6` address for IPv6, done with iproute2's `ip`, as
//! istio-iptables does with netlink (`tools/common/tproxy`): `ip rule add fwmark MARK lookup
//! TABLE`, `ip route add local default dev lo table TABLE`, `ip -6 addr add ::6/128 dev lo`.

#[cfg(test)]
mod tests;

use std::path::Path;

use crate::backend::{BackendError, Runner};
use crate::config::{Config, InboundPorts, InterceptionMode};

/// An `ip` command that failed.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    /// `ip` is not installed.
    #[error("the `ip` command (iproute2) is needed for {0} but is not in PATH")]
    MissingIp(&'static str),
    /// `ip` ran and failed.
    #[error("`ip {args}` failed: {stderr}")]
    Failed {
        /// Arguments.
        args: String,
        /// Standard error.
        stderr: String,
    },
    /// `ip` could not be run.
    #[error(transparent)]
    Run(#[from] BackendError),
}

/// One `ip` invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpCommand {
    /// Arguments after `ip`.
    pub args: Vec<String>,
    /// Errors that mean "already done" (`File exists` on add, `No such` on delete).
    pub tolerate: &'static [&'static str],
    /// Skip the command when `ip <args>` lists a line containing the text: the kernel accepts
    /// duplicate policy rules, so "add" is not idempotent by itself.
    pub unless_listed: Option<(Vec<String>, String)>,
    /// Repeat until it fails with a tolerated error (deletes duplicates too).
    pub repeat: bool,
}

const ADDED: &[&str] = &["File exists", "already assigned"];
const GONE: &[&str] = &["No such"];

/// What `ip` must do after the rules are applied. Empty unless TPROXY captures inbound traffic
/// or IPv6 is on.
pub fn setup_commands(cfg: &Config) -> Vec<IpCommand> {
    let mut cmds = Vec::new();
    if tproxy_active(cfg) {
        let mark = cfg.tproxy_mark;
        let table = cfg.tproxy_route_table;
        for f in families(cfg) {
            let mut add = ip(
                &format!("-f {f} rule add fwmark {mark} lookup {table}"),
                ADDED,
            );
            let show = format!("-f {f} rule show")
                .split(' ')
                .map(str::to_string)
                .collect();
            add.unless_listed = Some((show, format!("fwmark {:#x} lookup {table}", mark.get())));
            cmds.push(add);
        }
        for f in families(cfg) {
            cmds.push(ip(
                &format!("-f {f} route add local default dev lo table {table}"),
                ADDED,
            ));
        }
    }
    if cfg.enable_ipv6 {
        cmds.push(ip("-6 addr add ::6/128 dev lo", ADDED));
    }
    cmds
}

/// What `--cleanup-only` undoes: the TPROXY rule (every copy) and route. The `::6` address
/// stays, as with istio-iptables, since other software may use it.
pub fn cleanup_commands(cfg: &Config) -> Vec<IpCommand> {
    if !tproxy_active(cfg) {
        return Vec::new();
    }
    let mark = cfg.tproxy_mark;
    let table = cfg.tproxy_route_table;
    let mut cmds = Vec::new();
    for f in families(cfg) {
        let mut del = ip(
            &format!("-f {f} rule del fwmark {mark} lookup {table}"),
            GONE,
        );
        del.repeat = true;
        cmds.push(del);
        cmds.push(ip(
            &format!("-f {f} route del local default dev lo table {table}"),
            GONE,
        ));
    }
    cmds
}

fn families(cfg: &Config) -> &'static [&'static str] {
    if cfg.enable_ipv6 {
        &["inet", "inet6"]
    } else {
        &["inet"]
    }
}

fn tproxy_active(cfg: &Config) -> bool {
    cfg.mode == InterceptionMode::Tproxy && cfg.inbound_ports != InboundPorts::None
}

fn ip(args: &str, tolerate: &'static [&'static str]) -> IpCommand {
    IpCommand {
        args: args.split(' ').map(str::to_string).collect(),
        tolerate,
        unless_listed: None,
        repeat: false,
    }
}

/// Runs the commands in order; an "already done" error counts as success.
pub fn run(runner: &dyn Runner, ip_bin: &Path, cmds: &[IpCommand]) -> Result<(), RouteError> {
    for c in cmds {
        if let Some((show, needle)) = &c.unless_listed {
            let args: Vec<&str> = show.iter().map(String::as_str).collect();
            let out = runner.run(ip_bin, &args, None)?;
            if out.success && out.stdout.lines().any(|l| l.contains(needle.as_str())) {
                continue;
            }
        }
        let args: Vec<&str> = c.args.iter().map(String::as_str).collect();
        // A bound on repeats, in case `ip` keeps succeeding for some other reason.
        for _ in 0..if c.repeat { 64 } else { 1 } {
            let out = runner.run(ip_bin, &args, None)?;
            if out.success {
                continue;
            }
            if c.tolerate.iter().any(|t| out.stderr.contains(t)) {
                break;
            }
            return Err(RouteError::Failed {
                args: c.args.join(" "),
                stderr: out.stderr.trim().to_string(),
            });
        }
    }
    Ok(())
}

// === impl IpCommand ===

impl std::fmt::Display for IpCommand {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ip {}", self.args.join(" "))
    }
}

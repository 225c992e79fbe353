//! istio-iptables' command line: the same flags, defaults and environment fallbacks.
//!
//! Flag names, short letters, defaults and variables come from istio/istio
//! `tools/istio-iptables/pkg/cmd/root.go` and `pkg/constants` (Istio 1.2x): every flag may also
//! come from the variable named like it (`--istio-inbound-ports` ⇒ `ISTIO_INBOUND_PORTS`), some
//! from a second one (`ISTIO_META_DNS_CAPTURE`, `INVALID_DROP`, `ISTIO_DUAL_STACK`), and a
//! command-line flag always wins. Unlike istio-iptables, a bad value is an error naming the flag
//! or variable, never silently dropped.

mod flags;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use flags::*;

use crate::config::{
    self, Config, ConfigError, InboundPorts, InterceptionMode, OwnerGroups, Port, parse_bool,
};
use crate::plan::OUTBOUND_MARK;

/// Why the command line (or its environment) was refused.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// clap's own errors: unknown flag, missing value, `--help`.
    #[error(transparent)]
    Usage(#[from] clap::Error),
    /// A value that does not parse. `source_name` says where it came from.
    #[error("{source_name}: {error}")]
    Invalid {
        /// `-d/--istio-local-exclude-ports`, or the environment variable's name.
        source_name: String,
        /// What was wrong.
        error: ConfigError,
    },
    /// Two settings that cannot both hold.
    #[error("conflicting settings: {0}")]
    Conflict(String),
    /// An istio-iptables flag Skiff does not implement, set to a value that would change
    /// behaviour.
    #[error("--{flag} is not supported by iptables-init: {reason}")]
    Unsupported {
        /// The flag.
        flag: &'static str,
        /// What to do instead.
        reason: &'static str,
    },
    /// A positional argument other than the `istio-iptables` subcommand word.
    #[error(
        "unexpected argument {0:?}: iptables-init takes flags only (an optional leading \"istio-iptables\" is accepted)"
    )]
    Positional(String),
}

/// Where settings that are not flags come from: the process environment, or a map in tests.
pub trait Environment {
    /// An environment variable.
    fn var(&self, name: &str) -> Option<String>;
    /// The uid of a user name (for `ENVOY_USER`).
    fn user_id(&self, name: &str) -> Option<u32>;
}

/// The real process environment and passwd database.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessEnvironment;

/// A fixed set of variables and no users: for tests and fuzzing.
#[derive(Debug, Clone, Default)]
pub struct MapEnvironment {
    /// Variables.
    pub vars: HashMap<String, String>,
    /// Users and their uids.
    pub users: HashMap<String, u32>,
}

/// Log verbosity from `--log_output_level` (Istio's scope syntax, `default:info`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    /// `none`.
    Off,
    /// `error` or `fatal`.
    Error,
    /// `warn`.
    Warn,
    /// `info` (the default).
    Info,
    /// `debug`.
    Debug,
}

/// How to run, besides which rules to program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// `-n/--dry-run`: print the rules, change nothing.
    pub dry_run: bool,
    /// `--cleanup-only`: remove Skiff's chains and jumps, add nothing.
    pub cleanup_only: bool,
    /// `--reconcile`: replace existing Skiff chains that differ from the plan.
    pub reconcile: bool,
    /// `--force-apply`: apply without looking at the current tables (may duplicate jumps).
    pub force_apply: bool,
    /// `--skip-rule-apply`: program nothing (used with `--run-validation` under Istio CNI).
    pub skip_rule_apply: bool,
    /// `--run-validation`: check that redirection works, exit 126 if not.
    pub run_validation: bool,
    /// `--iptables-probe-port`: the port validation connects to.
    pub probe_port: Port,
    /// `--probe-timeout`: how long validation waits.
    pub probe_timeout: Duration,
    /// `--network-namespace`: enter this network namespace first.
    pub network_namespace: Option<PathBuf>,
    /// `--dual-stack`: program ip6tables whenever the pod has an IPv6 address.
    pub dual_stack: bool,
    /// `--log_output_level`.
    pub log_level: LogLevel,
}

/// A parsed command line: the rule config (without host facts yet) and run options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    /// Rule settings. `enable_ipv6` and the DNS servers are host facts, filled in by `app`.
    pub config: Config,
    /// Run options.
    pub options: Options,
    /// Settings that were accepted but have no effect, said out loud.
    pub warnings: Vec<String>,
}

/// Variables with no flag (Istio's `constants` env-only settings).
const OWNER_GROUPS: &str = "ISTIO_OUTBOUND_OWNER_GROUPS";
const OWNER_GROUPS_EXCLUDE: &str = "ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE";
const IPV4_LOOPBACK: &str = "ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR";
const ENVOY_USER: &str = "ENVOY_USER";

/// Istio's limit on `ISTIO_OUTBOUND_OWNER_GROUPS` (one rule holds them all).
const MAX_OWNER_GROUPS: usize = 64;

/// A raw value and where it came from.
struct Raw {
    value: String,
    source_name: String,
}

/// Command-line value, else the last set variable, else nothing.
fn lookup(cli: Option<String>, flag: &Flag, env: &dyn Environment) -> Option<Raw> {
    if let Some(value) = cli {
        return Some(Raw {
            value,
            source_name: flag.name(),
        });
    }
    flag.env.iter().rev().find_map(|var| {
        env.var(var).map(|value| Raw {
            value,
            source_name: format!("{var} (environment for {})", flag.name()),
        })
    })
}

fn parse_with<T>(
    cli: Option<String>,
    flag: &Flag,
    env: &dyn Environment,
    default: &str,
    parse: impl Fn(&str) -> Result<T, ConfigError>,
) -> Result<T, CliError> {
    match lookup(cli, flag, env) {
        Some(raw) => parse(&raw.value).map_err(|error| CliError::Invalid {
            source_name: raw.source_name,
            error,
        }),
        None => parse(default).map_err(|error| CliError::Invalid {
            source_name: format!("default of {}", flag.name()),
            error,
        }),
    }
}

fn boolean(cli: Option<String>, flag: &Flag, env: &dyn Environment) -> Result<bool, CliError> {
    parse_with(cli, flag, env, "false", parse_bool)
}

fn env_value(env: &dyn Environment, var: &str, default: &str) -> Raw {
    Raw {
        value: env.var(var).unwrap_or_else(|| default.to_string()),
        source_name: var.to_string(),
    }
}

fn invalid(source_name: &str) -> impl Fn(ConfigError) -> CliError + '_ {
    move |error| CliError::Invalid {
        source_name: source_name.to_string(),
        error,
    }
}

/// Parses an istio-iptables command line. `args` includes the program name, as `std::env::args`.
pub fn parse<I, T>(args: I, env: &dyn Environment) -> Result<Invocation, CliError>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let a = Args::try_parse_from(args)?;
    if let Some(cmd) = &a.command
        && cmd != "istio-iptables"
    {
        return Err(CliError::Positional(cmd.clone()));
    }
    let mut warnings = Vec::new();

    for (value, flag, reason) in [
        (
            a.cni_mode,
            &CNI_MODE,
            "istio-cni programs pods itself; run iptables-init in the pod instead",
        ),
        (
            a.native_nftables,
            &NATIVE_NFTABLES,
            "only iptables rules are programmed; unset global.nativeNftables",
        ),
        (
            a.trace_logging,
            &TRACE_LOGGING,
            "NFLOG trace rules are not generated",
        ),
    ] {
        if boolean(value, flag, env)? {
            return Err(CliError::Unsupported {
                flag: flag.long,
                reason,
            });
        }
    }

    let mut cfg = Config {
        proxy_port: parse_with(a.envoy_port, &ENVOY_PORT, env, "15001", str::parse)?,
        inbound_capture_port: parse_with(
            a.inbound_capture_port,
            &CAPTURE_PORT,
            env,
            "15006",
            str::parse,
        )?,
        inbound_tunnel_port: parse_with(
            a.inbound_tunnel_port,
            &TUNNEL_PORT,
            env,
            "15008",
            str::parse,
        )?,
        mode: parse_with(a.mode, &MODE, env, "", config::parse_mode)?,
        inbound_ports: parse_with(
            a.inbound_ports,
            &INBOUND_PORTS,
            env,
            "",
            config::parse_inbound_ports,
        )?,
        exclude_interfaces: parse_with(
            a.exclude_interfaces,
            &EXCLUDE_IFACES,
            env,
            "",
            config::parse_interfaces,
        )?,
        outbound_cidrs: parse_with(
            a.service_cidr,
            &SERVICE_CIDR,
            env,
            "",
            config::parse_outbound_cidrs,
        )?,
        outbound_cidrs_exclude: parse_with(
            a.service_exclude_cidr,
            &EXCLUDE_CIDR,
            env,
            "",
            config::parse_cidrs,
        )?,
        outbound_ports_include: parse_with(
            a.outbound_ports,
            &OUTBOUND_PORTS,
            env,
            "",
            config::parse_ports,
        )?,
        outbound_ports_exclude: parse_with(
            a.local_outbound_ports_exclude,
            &OUTBOUND_EXCLUDE,
            env,
            "",
            config::parse_ports,
        )?,
        kube_virt_interfaces: parse_with(
            a.kube_virt_interfaces,
            &KUBE_VIRT,
            env,
            "",
            config::parse_interfaces,
        )?,
        redirect_dns: boolean(a.redirect_dns, &REDIRECT_DNS, env)?,
        capture_all_dns: boolean(a.capture_all_dns, &CAPTURE_ALL_DNS, env)?,
        drop_invalid: boolean(a.drop_invalid, &DROP_INVALID, env)?,
        ..Config::default()
    };

    // -d only matters with -b '*' (istio-iptables ignores it otherwise).
    let exclude_ports = lookup(a.local_exclude_ports, &EXCLUDE_PORTS, env);
    if let Some(raw) = &exclude_ports {
        cfg.inbound_ports_exclude =
            config::parse_ports(&raw.value).map_err(invalid(&raw.source_name))?;
        if !cfg.inbound_ports_exclude.is_empty() && cfg.inbound_ports != InboundPorts::All {
            warnings.push(format!(
                "{} has no effect unless -b/--istio-inbound-ports is \"*\"",
                raw.source_name
            ));
        }
    }

    // -u: flag, PROXY_UID, else the uid of $ENVOY_USER (istio-proxy), else 1337. -g: same as -u.
    let uid_raw = match lookup(a.proxy_uid, &PROXY_UID, env).filter(|r| !r.value.trim().is_empty())
    {
        Some(raw) => raw,
        None => {
            let user = env
                .var(ENVOY_USER)
                .unwrap_or_else(|| "istio-proxy".to_string());
            let uid = env.user_id(&user).unwrap_or(1337);
            Raw {
                value: uid.to_string(),
                source_name: format!("uid of {ENVOY_USER}={user}"),
            }
        }
    };
    cfg.proxy_uids = config::parse_ids(&uid_raw.value).map_err(invalid(&uid_raw.source_name))?;
    let gid_raw = lookup(a.proxy_gid, &PROXY_GID, env)
        .filter(|r| !r.value.trim().is_empty())
        .unwrap_or(uid_raw);
    cfg.proxy_gids = config::parse_ids(&gid_raw.value).map_err(invalid(&gid_raw.source_name))?;

    // TPROXY settings; said out loud when set but unused.
    let mark_raw = lookup(a.tproxy_mark, &TPROXY_MARK, env);
    let table_raw = lookup(a.tproxy_route_table, &TPROXY_TABLE, env);
    if cfg.mode != InterceptionMode::Tproxy {
        for raw in [&mark_raw, &table_raw].into_iter().flatten() {
            warnings.push(format!(
                "{} has no effect unless the interception mode is TPROXY",
                raw.source_name
            ));
        }
    }
    cfg.tproxy_mark = parse_with(
        mark_raw.map(|r| r.value),
        &TPROXY_MARK,
        env,
        "1337",
        str::parse,
    )?;
    cfg.tproxy_route_table = parse_with(
        table_raw.map(|r| r.value),
        &TPROXY_TABLE,
        env,
        "133",
        str::parse,
    )?;
    if cfg.tproxy_mark.get() == OUTBOUND_MARK && cfg.mode == InterceptionMode::Tproxy {
        return Err(CliError::Conflict(format!(
            "{} is {OUTBOUND_MARK}, the mark TPROXY mode reserves for the proxy's own traffic to the app",
            TPROXY_MARK.name()
        )));
    }

    // Env-only settings.
    let include = env_value(env, OWNER_GROUPS, "*");
    let exclude = env_value(env, OWNER_GROUPS_EXCLUDE, "");
    cfg.owner_groups = if include.value.trim() == "*" {
        OwnerGroups::AllExcept(
            config::parse_groups(&exclude.value).map_err(invalid(&exclude.source_name))?,
        )
    } else {
        let groups = config::parse_groups(&include.value).map_err(invalid(&include.source_name))?;
        if config::split_list(&exclude.value).next().is_some() {
            return Err(CliError::Conflict(format!(
                "{OWNER_GROUPS} and {OWNER_GROUPS_EXCLUDE} are mutually exclusive; set the exclude list only with {OWNER_GROUPS}=\"*\""
            )));
        }
        if groups.len() > MAX_OWNER_GROUPS {
            return Err(CliError::Conflict(format!(
                "{OWNER_GROUPS} lists {} groups; at most {MAX_OWNER_GROUPS} fit in one iptables rule",
                groups.len()
            )));
        }
        OwnerGroups::Only(groups)
    };
    let lo = env_value(env, IPV4_LOOPBACK, "127.0.0.1/32");
    cfg.ipv4_loopback = config::parse_ipv4_loopback(&lo.value).map_err(invalid(&lo.source_name))?;

    if cfg.capture_all_dns && !cfg.redirect_dns {
        warnings.push(
            "--capture-all-dns has no effect without --redirect-dns (or ISTIO_META_DNS_CAPTURE=true)".to_string(),
        );
    }

    let options = Options {
        dry_run: boolean(a.dry_run, &DRY_RUN, env)?,
        cleanup_only: boolean(a.cleanup_only, &CLEANUP_ONLY, env)?,
        reconcile: boolean(a.reconcile, &RECONCILE, env)?,
        force_apply: boolean(a.force_apply, &FORCE_APPLY, env)?,
        skip_rule_apply: boolean(a.skip_rule_apply, &SKIP_RULE_APPLY, env)?,
        run_validation: boolean(a.run_validation, &RUN_VALIDATION, env)?,
        probe_port: parse_with(
            a.iptables_probe_port.clone(),
            &PROBE_PORT,
            env,
            "15002",
            str::parse,
        )?,
        probe_timeout: parse_with(
            a.probe_timeout.clone(),
            &PROBE_TIMEOUT,
            env,
            "5s",
            config::parse_duration,
        )?,
        network_namespace: lookup(a.network_namespace, &NETWORK_NAMESPACE, env)
            .map(|r| r.value)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from),
        dual_stack: boolean(a.dual_stack, &DUAL_STACK, env)?,
        log_level: match a.log_output_level {
            Some(v) => parse_log_level(&v).ok_or_else(|| CliError::Invalid {
                source_name: LOG_LEVEL.name(),
                error: ConfigError::LogLevel(v.clone()),
            })?,
            None => LogLevel::Info,
        },
    };
    if !options.run_validation {
        for (value, flag) in [
            (&a.iptables_probe_port, &PROBE_PORT),
            (&a.probe_timeout, &PROBE_TIMEOUT),
        ] {
            if let Some(raw) = lookup(value.clone(), flag, env) {
                warnings.push(format!(
                    "{} has no effect without --run-validation",
                    raw.source_name
                ));
            }
        }
    }
    if boolean(a.log_as_json, &LOG_AS_JSON, env)? {
        warnings.push("--log_as_json is accepted but logs are written as plain text".to_string());
    }
    check_conflicts(&options)?;

    Ok(Invocation {
        config: cfg,
        options,
        warnings,
    })
}

fn check_conflicts(o: &Options) -> Result<(), CliError> {
    let pairs = [
        (
            o.cleanup_only && o.reconcile,
            "--cleanup-only",
            "--reconcile",
        ),
        (
            o.cleanup_only && o.force_apply,
            "--cleanup-only",
            "--force-apply",
        ),
        (
            o.cleanup_only && o.skip_rule_apply,
            "--cleanup-only",
            "--skip-rule-apply",
        ),
        (
            o.cleanup_only && o.run_validation,
            "--cleanup-only",
            "--run-validation",
        ),
        (o.force_apply && o.reconcile, "--force-apply", "--reconcile"),
        (
            o.force_apply && o.skip_rule_apply,
            "--force-apply",
            "--skip-rule-apply",
        ),
    ];
    for (clash, a, b) in pairs {
        if clash {
            return Err(CliError::Conflict(format!(
                "{a} cannot be combined with {b}"
            )));
        }
    }
    Ok(())
}

/// Istio's `--log_output_level`: `level` or `scope:level,scope:level`; the `default` scope (or
/// the last bare level) decides.
fn parse_log_level(spec: &str) -> Option<LogLevel> {
    let mut level = LogLevel::Info;
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (scope, lvl) = part.rsplit_once(':').unwrap_or(("default", part));
        let parsed = match lvl {
            "none" => LogLevel::Off,
            "fatal" | "error" => LogLevel::Error,
            "warn" => LogLevel::Warn,
            "info" => LogLevel::Info,
            "debug" => LogLevel::Debug,
            _ => return None,
        };
        if scope == "default" {
            level = parsed;
        }
    }
    Some(level)
}

/// Splits fuzz input into an argument list (NUL-separated, lossy UTF-8) and parses it with an
/// empty environment. When it parses, the plan is built, rendered and put in iptables-save
/// form for every family. Never panics; returns the rendered plan.
pub fn parse_bytes(data: &[u8]) -> Option<String> {
    let mut args = vec!["iptables-init".to_string()];
    args.extend(
        data.split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned()),
    );
    let mut inv = parse(args, &MapEnvironment::default()).ok()?;
    inv.config.enable_ipv6 = data.len().is_multiple_of(2);
    let rules = crate::plan::plan(&inv.config);
    for family in rules.families() {
        // Group names do not resolve here; that is an error, not a panic.
        let _ = crate::state::Expected::new(&rules, family, &|_| None);
    }
    Some(rules.render_all())
}

// === impl ProcessEnvironment ===

impl Environment for ProcessEnvironment {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }

    fn user_id(&self, name: &str) -> Option<u32> {
        crate::host::user_id(name)
    }
}

// === impl MapEnvironment ===

impl MapEnvironment {
    /// An environment with these variables.
    pub fn with_vars(vars: &[(&str, &str)]) -> Self {
        Self {
            vars: vars
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            users: HashMap::new(),
        }
    }
}

impl Environment for MapEnvironment {
    fn var(&self, name: &str) -> Option<String> {
        self.vars.get(name).cloned()
    }

    fn user_id(&self, name: &str) -> Option<u32> {
        self.users.get(name).copied()
    }
}

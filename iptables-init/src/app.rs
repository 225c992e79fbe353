//! The run: enter the namespace, read host facts, plan, then print, apply or clean up, set up
//! routes, and validate.

use std::io::Write;
use std::path::Path;

use crate::apply::{ApplyError, Engine, Mode};
use crate::backend::{BackendError, PathSearch, SystemRunner, Xtables};
use crate::cli::{Invocation, Options};
use crate::config::{Config, split_dns_servers};
use crate::host::{self, HostError};
use crate::plan::{effective_redirect_dns, plan};
use crate::routes::{self, RouteError};
use crate::rules::{OWN_CHAINS, RuleSet};
use crate::validation::{self, ValidationError};

/// Why the run failed. Each variant says what was (not) changed.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// Namespace, capabilities, addresses or resolv.conf.
    #[error(transparent)]
    Host(#[from] HostError),
    /// Changing rules needs CAP_NET_ADMIN.
    #[error(
        "iptables-init needs CAP_NET_ADMIN to change rules and this process does not have it (nothing was changed); run it as root or add NET_ADMIN (and NET_RAW) to the container's capabilities"
    )]
    NoNetAdmin,
    /// Missing or unusable iptables binaries.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// Reading, deciding or committing rules.
    #[error(transparent)]
    Apply(#[from] ApplyError),
    /// The TPROXY routes failed after the rules were committed.
    #[error("{source}; {rollback}")]
    Routes {
        /// What `ip` said.
        source: RouteError,
        /// What happened to the rules.
        rollback: String,
    },
    /// `--run-validation` failed.
    #[error(transparent)]
    Validation(#[from] ValidationError),
    /// Writing the dry-run output failed.
    #[error("cannot write output: {0}")]
    Output(#[from] std::io::Error),
}

// === impl AppError ===

impl AppError {
    /// The process exit code: 126 for a failed validation (as Istio), 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            AppError::Validation(_) => validation::EXIT_CODE,
            _ => 1,
        }
    }
}

/// Runs an invocation against the real system. Dry-run output goes to `out`.
pub fn run(mut inv: Invocation, out: &mut dyn Write) -> Result<(), AppError> {
    let o = inv.options.clone();
    if let Some(ns) = &o.network_namespace {
        host::enter_netns(ns)?;
        tracing::info!("entered network namespace {}", ns.display());
    }
    let families = host::ip_families(o.dual_stack)?;
    inv.config.enable_ipv6 = families.enable_ipv6;
    if inv.config.redirect_dns && !inv.config.capture_all_dns {
        let (servers, skipped) = host::read_resolv_conf(Path::new("/etc/resolv.conf"))?;
        for line in skipped {
            tracing::warn!("/etc/resolv.conf: ignoring unreadable name server line {line:?}");
        }
        (inv.config.dns_servers_v4, inv.config.dns_servers_v6) = split_dns_servers(&servers);
        if !effective_redirect_dns(&inv.config) {
            tracing::warn!(
                "--redirect-dns is set but /etc/resolv.conf lists no name server and --capture-all-dns is off: DNS is not captured"
            );
        }
    }
    let cfg = &inv.config;
    let rules = plan(cfg);

    if o.dry_run {
        print_dry_run(&inv, &rules, out)?;
        if o.reconcile || o.force_apply {
            tracing::warn!(
                "--reconcile and --force-apply have no effect with --dry-run: the tables are not read"
            );
        }
        if o.run_validation {
            tracing::warn!(
                "--run-validation is skipped in --dry-run: no rules were applied to validate"
            );
        }
        return Ok(());
    }

    if o.skip_rule_apply {
        tracing::info!("--skip-rule-apply: not changing any rule");
    } else {
        program(cfg, &rules, &o)?;
    }

    if o.run_validation {
        let at = validation::run(
            cfg.proxy_port,
            cfg.inbound_capture_port,
            o.probe_port,
            families.first_is_ipv6,
            o.probe_timeout,
        )?;
        tracing::info!("validation passed: the probe was redirected to {at}");
    }
    Ok(())
}

/// Applies (or cleans up) the rules, then the routes; undoes the rules if the routes fail.
fn program(cfg: &Config, rules: &RuleSet, o: &Options) -> Result<(), AppError> {
    if !host::has_net_admin()? {
        return Err(AppError::NoNetAdmin);
    }
    let runner = SystemRunner;
    let path = PathSearch::from_env();
    let ip_cmds = if o.cleanup_only {
        routes::cleanup_commands(cfg)
    } else {
        routes::setup_commands(cfg)
    };
    // Everything that can be missing is looked up before the first change.
    let ip = if ip_cmds.is_empty() {
        None
    } else {
        let missing = RouteError::MissingIp("TPROXY routing and the IPv6 ::6 address");
        Some(path.find("ip").ok_or(AppError::Routes {
            source: missing,
            rollback: "nothing was changed".to_string(),
        })?)
    };
    let xtables = rules
        .families()
        .into_iter()
        .map(|f| Xtables::detect(f, &path, &runner))
        .collect::<Result<Vec<_>, _>>()?;
    for x in &xtables {
        tracing::info!(
            "{}: using {} ({:?})",
            x.family,
            x.restore_command(),
            x.backend
        );
    }
    let group_id = |name: &str| host::group_id(name);
    let engine = Engine::new(&runner, xtables, &group_id);
    let mode = if o.cleanup_only {
        Mode::Cleanup
    } else {
        Mode::Apply {
            reconcile: o.reconcile,
            force: o.force_apply,
        }
    };
    let committed = engine.commit(engine.prepare(rules, mode)?)?;
    for (family, action) in committed.actions() {
        tracing::info!("{family}: {action}");
    }

    if let Some(ip) = ip {
        if let Err(source) = routes::run(&runner, &ip, &ip_cmds) {
            let rollback = match committed.undo(&engine) {
                Ok(()) if committed.changed() => "the iptables rules were rolled back".to_string(),
                Ok(()) => "no iptables rule had been changed".to_string(),
                Err(e) => format!("ROLLBACK FAILED: {}", e.join("; ")),
            };
            return Err(AppError::Routes { source, rollback });
        }
        for c in &ip_cmds {
            tracing::info!("{c}");
        }
    }
    if !o.cleanup_only {
        for d in engine.verify(rules)? {
            tracing::warn!("after applying, the tables differ from the plan: {d}");
        }
    }
    Ok(())
}

/// Prints what would be done, in iptables-restore syntax, changing nothing.
fn print_dry_run(inv: &Invocation, rules: &RuleSet, out: &mut dyn Write) -> Result<(), AppError> {
    let o = &inv.options;
    if o.cleanup_only {
        writeln!(
            out,
            "# --cleanup-only would delete these chains where present: {}",
            OWN_CHAINS.join(", ")
        )?;
        writeln!(
            out,
            "# and these rules from built-in chains, plus any other jump to those chains:"
        )?;
        for family in rules.families() {
            for (table, rs) in rules.builtin_rules(family) {
                for (chain, args) in rs {
                    writeln!(out, "# {family} -t {table} -D {chain} {}", args.join(" "))?;
                }
            }
        }
        for c in routes::cleanup_commands(&inv.config) {
            writeln!(out, "# {c}")?;
        }
        return Ok(());
    }
    if o.skip_rule_apply {
        writeln!(out, "# --skip-rule-apply: no rules would be applied")?;
        return Ok(());
    }
    out.write_all(rules.render_all().as_bytes())?;
    for c in routes::setup_commands(&inv.config) {
        writeln!(out, "# then: {c}")?;
    }
    Ok(())
}

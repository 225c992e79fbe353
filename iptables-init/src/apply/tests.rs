//! Engine tests with a scripted runner: which commands run, in which order, and what happens
//! when iptables-restore refuses or fails.

use std::cell::RefCell;
use std::path::{Path, PathBuf};

use super::*;
use crate::backend::{Backend, Output};
use crate::config::{Config, InboundPorts, OutboundCidrs};
use crate::plan::plan;

/// Serves fixed `save` output per binary and fails restores whose "binary args" match.
struct Script {
    saves: Vec<(&'static str, String)>,
    fail: Vec<&'static str>,
    calls: RefCell<Vec<String>>,
}

impl Runner for Script {
    fn run(
        &self,
        program: &Path,
        args: &[&str],
        stdin: Option<&str>,
    ) -> Result<Output, BackendError> {
        let name = program.display().to_string();
        let call = format!("{name} {}", args.join(" ")).trim_end().to_string();
        self.calls
            .borrow_mut()
            .push(format!("{call}\n{}", stdin.unwrap_or("")));
        if self.fail.contains(&call.as_str()) {
            return Ok(Output {
                success: false,
                status: "exit status: 1".into(),
                stderr: format!("{name}: line 2 failed"),
                ..Output::default()
            });
        }
        let stdout = self
            .saves
            .iter()
            .find(|(bin, _)| *bin == name)
            .map(|(_, s)| s.clone())
            .unwrap_or_default();
        Ok(Output {
            success: true,
            status: "exit status: 0".into(),
            stdout,
            stderr: String::new(),
        })
    }
}

impl Script {
    fn new(saves: Vec<(&'static str, String)>, fail: Vec<&'static str>) -> Self {
        Self {
            saves,
            fail,
            calls: RefCell::default(),
        }
    }

    /// Just the command lines.
    fn commands(&self) -> Vec<String> {
        self.calls
            .borrow()
            .iter()
            .map(|c| c.lines().next().unwrap_or("").to_string())
            .collect()
    }

    fn input_of(&self, command: &str) -> String {
        let calls = self.calls.borrow();
        let call = calls
            .iter()
            .find(|c| c.lines().next() == Some(command))
            .unwrap();
        call.split_once('\n').unwrap().1.to_string()
    }
}

fn xt(family: Family) -> Xtables {
    let base = family.command();
    Xtables {
        family,
        backend: Backend::Nft,
        save: PathBuf::from(format!("{base}-save")),
        restore: PathBuf::from(format!("{base}-restore")),
        wait: false,
    }
}

fn dual_stack_injection() -> RuleSet {
    plan(&Config {
        inbound_ports: InboundPorts::All,
        outbound_cidrs: OutboundCidrs::All,
        enable_ipv6: true,
        ..Config::default()
    })
}

const NO_GROUPS: &dyn Fn(&str) -> Option<u32> = &|_| None;

#[test]
fn clean_tables_get_the_istio_restore_text_after_a_test_run() {
    let rs = dual_stack_injection();
    let script = Script::new(vec![], vec![]);
    let engine = Engine::new(&script, vec![xt(Family::V4), xt(Family::V6)], NO_GROUPS);
    let txs = engine
        .prepare(
            &rs,
            Mode::Apply {
                reconcile: false,
                force: false,
            },
        )
        .unwrap();
    let done = engine.commit(txs).unwrap();
    assert_eq!(
        done.actions(),
        vec![(Family::V4, Action::Applied), (Family::V6, Action::Applied)]
    );
    assert_eq!(
        script.commands(),
        vec![
            "iptables-save",
            "ip6tables-save",
            "iptables-restore --noflush --test",
            "ip6tables-restore --noflush --test",
            "iptables-restore --noflush",
            "ip6tables-restore --noflush",
        ]
    );
    assert_eq!(
        script.input_of("iptables-restore --noflush"),
        rs.render(Family::V4)
    );
    assert_eq!(
        script.input_of("ip6tables-restore --noflush"),
        rs.render(Family::V6)
    );
}

#[test]
fn a_refused_transaction_changes_nothing_in_any_family() {
    let rs = dual_stack_injection();
    let script = Script::new(vec![], vec!["ip6tables-restore --noflush --test"]);
    let engine = Engine::new(&script, vec![xt(Family::V4), xt(Family::V6)], NO_GROUPS);
    let txs = engine
        .prepare(
            &rs,
            Mode::Apply {
                reconcile: false,
                force: false,
            },
        )
        .unwrap();
    let err = engine.commit(txs).unwrap_err();
    assert!(
        matches!(
            err,
            ApplyError::Rejected {
                family: Family::V6,
                ..
            }
        ),
        "{err}"
    );
    assert!(
        !script.commands().iter().any(|c| c.ends_with("--noflush")),
        "{:?}",
        script.commands()
    );
}

#[test]
fn a_failed_commit_rolls_every_family_back() {
    let rs = dual_stack_injection();
    let before = "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n-A OUTPUT -j RETURN\nCOMMIT\n";
    let script = Script::new(
        vec![
            ("iptables-save", before.to_string()),
            ("ip6tables-save", before.to_string()),
        ],
        vec!["ip6tables-restore --noflush"],
    );
    let engine = Engine::new(&script, vec![xt(Family::V4), xt(Family::V6)], NO_GROUPS);
    let txs = engine
        .prepare(
            &rs,
            Mode::Apply {
                reconcile: false,
                force: false,
            },
        )
        .unwrap();
    let err = engine.commit(txs).unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(
            err,
            ApplyError::Commit {
                family: Family::V6,
                ..
            }
        ),
        "{msg}"
    );
    assert!(msg.contains("restored to their previous state"), "{msg}");
    let cmds = script.commands();
    assert_eq!(
        &cmds[cmds.len() - 2..],
        ["ip6tables-restore", "iptables-restore"]
    );
    assert_eq!(
        script.input_of("iptables-restore"),
        "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n-A OUTPUT -j RETURN\nCOMMIT\n"
    );
}

#[test]
fn identical_rules_are_left_alone_and_differing_ones_need_reconcile() {
    let rs = plan(&Config {
        inbound_ports: InboundPorts::All,
        outbound_cidrs: OutboundCidrs::All,
        ..Config::default()
    });
    let expected = Expected::new(&rs, Family::V4, NO_GROUPS).unwrap();
    let mut dump = String::from(
        "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n",
    );
    for line in expected.lines(Table::Nat) {
        dump.push_str(&line);
        dump.push('\n');
    }
    dump.push_str("COMMIT\n");

    let script = Script::new(vec![("iptables-save", dump.clone())], vec![]);
    let engine = Engine::new(&script, vec![xt(Family::V4)], NO_GROUPS);
    let txs = engine
        .prepare(
            &rs,
            Mode::Apply {
                reconcile: false,
                force: false,
            },
        )
        .unwrap();
    assert_eq!(txs[0].action, Action::Unchanged);
    assert!(!engine.commit(txs).unwrap().changed());
    assert_eq!(script.commands(), vec!["iptables-save"]);

    let other = plan(&Config {
        inbound_ports: InboundPorts::All,
        ..Config::default()
    });
    let err = engine
        .prepare(
            &other,
            Mode::Apply {
                reconcile: false,
                force: false,
            },
        )
        .unwrap_err();
    assert!(err.to_string().contains("rerun with --reconcile"), "{err}");
    let txs = engine
        .prepare(
            &other,
            Mode::Apply {
                reconcile: true,
                force: false,
            },
        )
        .unwrap();
    assert_eq!(txs[0].action, Action::Reconciled);
    assert!(
        txs[0]
            .input
            .as_deref()
            .unwrap()
            .contains("-D OUTPUT -j ISTIO_OUTPUT\n")
    );
}

#[test]
fn cleanup_of_clean_tables_does_nothing() {
    let rs = dual_stack_injection();
    let script = Script::new(vec![], vec![]);
    let engine = Engine::new(&script, vec![xt(Family::V4), xt(Family::V6)], NO_GROUPS);
    let txs = engine.prepare(&rs, Mode::Cleanup).unwrap();
    assert!(txs.iter().all(|t| t.action == Action::NothingToClean));
    assert!(!engine.commit(txs).unwrap().changed());
}

#[test]
fn a_family_without_binaries_is_an_error_before_any_change() {
    let rs = dual_stack_injection();
    let script = Script::new(vec![], vec![]);
    let engine = Engine::new(&script, vec![xt(Family::V4)], NO_GROUPS);
    let err = engine
        .prepare(
            &rs,
            Mode::Apply {
                reconcile: false,
                force: false,
            },
        )
        .unwrap_err();
    assert!(matches!(
        err,
        ApplyError::Unavailable { family: Family::V6 }
    ));
}

#[test]
fn touched_tables_come_from_table_lines() {
    assert_eq!(
        touched_tables("* nat\nCOMMIT\n*mangle\nCOMMIT\n"),
        vec![Table::Mangle, Table::Nat]
    );
}

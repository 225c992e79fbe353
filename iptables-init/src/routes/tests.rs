//! Which `ip` commands TPROXY and IPv6 need, and how re-runs stay idempotent.

use std::cell::RefCell;

use super::*;
use crate::backend::Output;

fn tproxy(ipv6: bool) -> Config {
    Config {
        mode: InterceptionMode::Tproxy,
        inbound_ports: InboundPorts::All,
        enable_ipv6: ipv6,
        ..Config::default()
    }
}

#[test]
fn tproxy_needs_a_rule_and_a_local_route_per_family() {
    let cmds: Vec<String> = setup_commands(&tproxy(true))
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        cmds,
        vec![
            "ip -f inet rule add fwmark 1337 lookup 133",
            "ip -f inet6 rule add fwmark 1337 lookup 133",
            "ip -f inet route add local default dev lo table 133",
            "ip -f inet6 route add local default dev lo table 133",
            "ip -6 addr add ::6/128 dev lo",
        ]
    );
    let cleanup: Vec<String> = cleanup_commands(&tproxy(false))
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        cleanup,
        vec![
            "ip -f inet rule del fwmark 1337 lookup 133",
            "ip -f inet route del local default dev lo table 133"
        ]
    );
}

#[test]
fn redirect_mode_needs_no_routes_and_tproxy_without_inbound_neither() {
    let cfg = Config {
        inbound_ports: InboundPorts::All,
        ..Config::default()
    };
    assert!(setup_commands(&cfg).is_empty());
    assert!(cleanup_commands(&cfg).is_empty());
    let cfg = Config {
        mode: InterceptionMode::Tproxy,
        ..Config::default()
    };
    assert!(setup_commands(&cfg).is_empty());
}

/// Scripted replies per command line, consumed in order; unscripted calls succeed.
struct Script {
    replies: RefCell<Vec<(String, bool, String, String)>>,
    calls: RefCell<Vec<String>>,
}

impl Script {
    fn new(replies: &[(&str, bool, &str, &str)]) -> Self {
        Self {
            replies: RefCell::new(
                replies
                    .iter()
                    .map(|(c, ok, out, err)| (c.to_string(), *ok, out.to_string(), err.to_string()))
                    .collect(),
            ),
            calls: RefCell::default(),
        }
    }
}

impl Runner for Script {
    fn run(
        &self,
        _program: &Path,
        args: &[&str],
        _stdin: Option<&str>,
    ) -> Result<Output, BackendError> {
        let call = args.join(" ");
        self.calls.borrow_mut().push(call.clone());
        let mut replies = self.replies.borrow_mut();
        let reply = replies
            .iter()
            .position(|(c, ..)| *c == call)
            .map(|i| replies.remove(i));
        let (success, stdout, stderr) = reply
            .map_or((true, String::new(), String::new()), |(_, ok, o, e)| {
                (ok, o, e)
            });
        Ok(Output {
            success,
            status: String::new(),
            stdout,
            stderr,
        })
    }
}

#[test]
fn an_existing_rule_is_not_added_twice() {
    let listed = "0:\tfrom all lookup local\n32765:\tfrom all fwmark 0x539 lookup 133\n";
    let script = Script::new(&[("-f inet rule show", true, listed, "")]);
    run(&script, Path::new("ip"), &setup_commands(&tproxy(false))).unwrap();
    assert_eq!(
        *script.calls.borrow(),
        vec![
            "-f inet rule show",
            "-f inet route add local default dev lo table 133"
        ]
    );
}

#[test]
fn already_done_is_success_and_other_errors_are_reported() {
    let script = Script::new(&[
        (
            "-f inet rule add fwmark 1337 lookup 133",
            false,
            "",
            "RTNETLINK answers: File exists",
        ),
        (
            "-f inet route add local default dev lo table 133",
            false,
            "",
            "RTNETLINK answers: File exists",
        ),
        (
            "-6 addr add ::6/128 dev lo",
            false,
            "",
            "Error: ipv6: address already assigned.",
        ),
    ]);
    run(&script, Path::new("ip"), &setup_commands(&tproxy(true))).unwrap();

    let script = Script::new(&[(
        "-f inet rule add fwmark 1337 lookup 133",
        false,
        "",
        "RTNETLINK answers: Permission denied",
    )]);
    let err = run(&script, Path::new("ip"), &setup_commands(&tproxy(false))).unwrap_err();
    assert!(err.to_string().contains("Permission denied"), "{err}");
}

#[test]
fn cleanup_deletes_every_copy_of_the_rule() {
    let del = "-f inet rule del fwmark 1337 lookup 133";
    let script = Script::new(&[
        (del, true, "", ""),
        (del, true, "", ""),
        (
            del,
            false,
            "",
            "RTNETLINK answers: No such file or directory",
        ),
        (
            "-f inet route del local default dev lo table 133",
            false,
            "",
            "RTNETLINK answers: No such process",
        ),
    ]);
    run(&script, Path::new("ip"), &cleanup_commands(&tproxy(false))).unwrap();
    let dels = script.calls.borrow().iter().filter(|c| *c == del).count();
    assert_eq!(dels, 3, "two copies deleted, the third attempt finds none");
}

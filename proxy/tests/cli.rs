//! The `proxy` binary's command line: validation mode and bad input, run as an operator would.

mod support;

use std::process::{Command, Output};

use support::{TCP_PROXY, TempDir, proxy_bin};

fn run(args: &[&str]) -> Output {
    Command::new(proxy_bin())
        .args(args)
        .output()
        .expect("running the proxy binary")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

/// Asserts a clean failure: non-zero exit, the expected message, and no panic.
fn assert_fails_with(o: &Output, expected: &[&str]) {
    let err = stderr(o);
    assert!(!o.status.success(), "expected failure, got success: {err}");
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(!err.contains("panicked"), "the proxy panicked: {err}");
    for e in expected {
        assert!(err.contains(e), "expected {e:?} in:\n{err}");
    }
}

fn good_config() -> String {
    format!(
        r#"static_resources:
  listeners:
  - name: l
    address: {{socket_address: {{address: 127.0.0.1, port_value: 0}}}}
    filter_chains:
    - filters: [{{name: t, typed_config: {{"@type": "{TCP_PROXY}", stat_prefix: s, cluster: c}}}}]
  clusters:
  - name: c
    load_assignment: {{cluster_name: c, endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: 9}}}}}}}}]}}]}}
"#
    )
}

fn write(dir: &TempDir, name: &str, text: &str) -> String {
    let p = dir.path(name);
    std::fs::write(&p, text).unwrap();
    p.to_string_lossy().to_string()
}

#[test]
fn validate_mode_accepts_a_good_config() {
    let dir = TempDir::new("cli");
    let file = write(&dir, "good.yaml", &good_config());
    let o = run(&["--mode", "validate", "-c", &file]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        format!("configuration '{file}' OK\n")
    );
    // The long flag and inline YAML work too.
    let o = run(&["--mode", "validate", "--config-yaml", &good_config()]);
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn missing_config_file() {
    let o = run(&[
        "--mode",
        "validate",
        "--config-path",
        "/nonexistent/bootstrap.yaml",
    ]);
    assert_fails_with(
        &o,
        &[
            "cannot read config file '/nonexistent/bootstrap.yaml'",
            "No such file or directory",
        ],
    );
}

#[test]
fn invalid_yaml() {
    let dir = TempDir::new("cli");
    let file = write(
        &dir,
        "bad.yaml",
        "static_resources:\n  listeners: [\n    - {name: x\n",
    );
    assert_fails_with(&run(&["-c", &file]), &["invalid YAML", "line"]);
}

#[test]
fn unknown_type_url() {
    let cfg = good_config().replace(TCP_PROXY, "type.googleapis.com/acme.Unknown");
    assert_fails_with(
        &run(&["--config-yaml", &cfg]),
        &[
            "static_resources.listeners[0].filter_chains[0].filters[0].typed_config",
            "acme.Unknown",
        ],
    );
}

#[test]
fn port_out_of_range() {
    let cfg = good_config().replace("port_value: 0", "port_value: 65536");
    assert_fails_with(
        &run(&["--config-yaml", &cfg]),
        &["static_resources.listeners[0].address.socket_address.port_value: 65536 is out of range"],
    );
}

#[test]
fn cluster_referenced_but_not_defined() {
    let cfg = good_config().replace("cluster: c}", "cluster: ghost}");
    assert_fails_with(
        &run(&["--mode", "validate", "--config-yaml", &cfg]),
        &["tcp_proxy references cluster 'ghost', which is not defined"],
    );
}

#[test]
fn every_error_is_listed_in_one_run() {
    let cfg = good_config()
        .replace("port_value: 0", "port_value: 99999")
        .replace("name: c\n", "name: c\n    lb_policy: RING_HASH\n");
    let o = run(&["--mode", "validate", "--config-yaml", &cfg]);
    assert_fails_with(
        &o,
        &[
            "2 configuration errors",
            "port_value: 99999",
            "RING_HASH is not supported",
        ],
    );
}

#[test]
fn no_config_at_all() {
    assert_fails_with(&run(&[]), &["no configuration", "-c/--config-path"]);
}

#[test]
fn unknown_flag_is_refused_by_the_parser() {
    let o = run(&["--no-such-flag"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--no-such-flag"), "{}", stderr(&o));
}

#[test]
fn listener_address_in_use_is_a_clear_startup_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let cfg = good_config().replace("port_value: 0", &format!("port_value: {port}"));
    // No SO_REUSEPORT so the second bind conflicts like any other process would.
    let cfg = cfg.replace(
        "    filter_chains:",
        "    enable_reuse_port: false\n    filter_chains:",
    );
    assert_fails_with(
        &run(&["--config-yaml", &cfg]),
        &[
            &format!("cannot bind listener 'l' to 127.0.0.1:{port}"),
            "Address already in use",
        ],
    );
}

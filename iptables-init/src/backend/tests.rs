//! Backend detection tests with fake binaries and a scripted runner.

use super::*;
use std::cell::RefCell;
use std::collections::HashMap;

/// Answers `save` runs from a table of program name to (success, stdout).
struct Fake(HashMap<String, (bool, String)>, RefCell<Vec<String>>);

impl Runner for Fake {
    fn run(
        &self,
        program: &Path,
        args: &[&str],
        _stdin: Option<&str>,
    ) -> Result<Output, BackendError> {
        let name = program.file_name().unwrap().to_string_lossy().to_string();
        self.1
            .borrow_mut()
            .push(format!("{name} {}", args.join(" ")));
        let (ok, out) = self.0.get(&name).cloned().unwrap_or((false, String::new()));
        let stdout = if args == ["--version"] {
            format!(
                "{name} v1.8.9 ({})",
                if name.contains("nft") {
                    "nf_tables"
                } else {
                    "legacy"
                }
            )
        } else {
            out
        };
        Ok(Output {
            success: ok,
            status: if ok {
                "exit status: 0".into()
            } else {
                "exit status: 1".into()
            },
            stdout,
            stderr: if ok { String::new() } else { "denied".into() },
        })
    }
}

/// A directory with empty executables of these names.
fn bin_dir(tag: &str, names: &[&str]) -> (PathBuf, PathSearch) {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("skiff-ipt-bins-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for n in names {
        let p = dir.join(n);
        std::fs::write(&p, "").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let search = PathSearch::new(dir.to_str().unwrap());
    (dir, search)
}

const ALL: [&str; 6] = [
    "iptables-legacy-save",
    "iptables-legacy-restore",
    "iptables-nft-save",
    "iptables-nft-restore",
    "iptables-save",
    "iptables-restore",
];

#[test]
fn prefers_legacy_only_when_it_holds_rules() {
    let (dir, path) = bin_dir("prefer", &ALL);
    let mut answers = HashMap::new();
    answers.insert("iptables-legacy-save".to_string(), (true, String::new()));
    answers.insert("iptables-nft-save".to_string(), (true, String::new()));
    let x = Xtables::detect(
        Family::V4,
        &path,
        &Fake(answers.clone(), RefCell::default()),
    )
    .unwrap();
    assert_eq!(x.backend, Backend::Nft);
    assert!(!x.wait);
    answers.insert(
        "iptables-legacy-save".to_string(),
        (
            true,
            "*nat\n:OUTPUT ACCEPT [0:0]\n-A OUTPUT -j RETURN\nCOMMIT\n".to_string(),
        ),
    );
    let x = Xtables::detect(Family::V4, &path, &Fake(answers, RefCell::default())).unwrap();
    assert_eq!(x.backend, Backend::Legacy);
    assert!(x.wait);
    assert!(x.restore.ends_with("iptables-legacy-restore"));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn missing_binaries_name_what_was_looked_for() {
    let path = PathSearch::new("/nonexistent-skiff-dir");
    let err =
        Xtables::detect(Family::V6, &path, &Fake(HashMap::new(), RefCell::default())).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("ip6tables-nft-save"), "{msg}");
    assert!(msg.contains("PATH=/nonexistent-skiff-dir"), "{msg}");
}

#[test]
fn failing_binaries_are_reported_not_used() {
    let (dir, path) = bin_dir("failing", &ALL[2..]);
    let err =
        Xtables::detect(Family::V4, &path, &Fake(HashMap::new(), RefCell::default())).unwrap_err();
    assert!(matches!(err, BackendError::Unusable { .. }), "{err}");
    assert!(err.to_string().contains("denied"));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn wait_support_follows_the_version() {
    assert!(supports_wait("iptables-save v1.8.9 (legacy)"));
    assert!(supports_wait("iptables-save v1.6.2"));
    assert!(!supports_wait("iptables-save v1.6.1"));
    assert!(!supports_wait("garbage"));
}

#[test]
fn legacy_without_rules_is_used_only_when_nothing_else_works() {
    let (dir, path) = bin_dir("fallback", &ALL[..4]);
    let mut answers = HashMap::new();
    answers.insert("iptables-legacy-save".to_string(), (true, String::new()));
    // nft is installed but fails (no kernel support): legacy, even empty, is the fallback.
    let x = Xtables::detect(Family::V4, &path, &Fake(answers, RefCell::default())).unwrap();
    assert_eq!(x.backend, Backend::Legacy);
    std::fs::remove_dir_all(dir).unwrap();
}

//! Finding and running the iptables binaries: nf_tables or legacy, chosen as istio-iptables
//! chooses (`dependencies/implementation_linux.go`): legacy if it already holds rules, else
//! nft, else the unsuffixed binaries.

#[cfg(test)]
mod tests;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::rules::Family;

/// A command that could not be run or failed.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// No binary of any variant is installed.
    #[error(
        "no {family} iptables binaries found: looked for {tried} in PATH={path}; install the iptables package (iptables-restore and iptables-save are needed)"
    )]
    Missing {
        /// The family.
        family: Family,
        /// The names looked for.
        tried: String,
        /// The search path.
        path: String,
    },
    /// Binaries exist but none works here (no kernel support, no permission).
    #[error("no usable {family} iptables binary: {details}")]
    Unusable {
        /// The family.
        family: Family,
        /// What each candidate said.
        details: String,
    },
    /// A program could not be started.
    #[error("cannot run {program}: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// Why.
        source: std::io::Error,
    },
    /// A program ran and failed.
    #[error("{command} failed ({status}): {stderr}")]
    Failed {
        /// Program and arguments.
        command: String,
        /// Exit status.
        status: String,
        /// Its standard error, trimmed.
        stderr: String,
    },
}

/// What a finished command produced.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Output {
    /// Exit status 0.
    pub success: bool,
    /// Exit status, for messages.
    pub status: String,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

/// Runs programs. The real one spawns processes; tests substitute a script.
pub trait Runner {
    /// Runs `program args`, feeding `stdin`.
    fn run(
        &self,
        program: &Path,
        args: &[&str],
        stdin: Option<&str>,
    ) -> Result<Output, BackendError>;
}

/// Spawns real processes.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemRunner;

/// Looks programs up in a `PATH`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathSearch {
    dirs: Vec<PathBuf>,
    raw: String,
}

/// nf_tables or legacy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// `iptables-nft`.
    Nft,
    /// `iptables-legacy`.
    Legacy,
}

/// How to restore.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestoreMode {
    /// `--noflush --test`: parse and build, commit nothing.
    Test,
    /// `--noflush`: add to what is there.
    NoFlush,
    /// Replace the listed tables entirely (rollback).
    Replace,
}

/// The chosen binaries for one family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Xtables {
    /// IPv4 or IPv6.
    pub family: Family,
    /// nft or legacy.
    pub backend: Backend,
    /// `iptables-nft-save` or the like.
    pub save: PathBuf,
    /// `iptables-nft-restore` or the like.
    pub restore: PathBuf,
    /// Whether restore takes `--wait` (legacy 1.6.2 and later, as istio-iptables decides).
    pub wait: bool,
}

// === impl SystemRunner ===

impl Runner for SystemRunner {
    fn run(
        &self,
        program: &Path,
        args: &[&str],
        stdin: Option<&str>,
    ) -> Result<Output, BackendError> {
        let spawn_err = |source| BackendError::Spawn {
            program: program.display().to_string(),
            source,
        };
        let mut child = Command::new(program)
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(spawn_err)?;
        if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(input.as_bytes()).map_err(spawn_err)?;
        }
        let out = child.wait_with_output().map_err(spawn_err)?;
        Ok(Output {
            success: out.status.success(),
            status: out.status.to_string(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }
}

// === impl PathSearch ===

impl PathSearch {
    /// Searches the directories of a `PATH` value.
    pub fn new(path: &str) -> Self {
        Self {
            dirs: std::env::split_paths(path).collect(),
            raw: path.to_string(),
        }
    }

    /// Searches this process's `PATH` (or the usual sbin directories when it is unset).
    pub fn from_env() -> Self {
        Self::new(
            &std::env::var("PATH")
                .unwrap_or_else(|_| "/usr/local/sbin:/usr/sbin:/sbin:/usr/bin:/bin".into()),
        )
    }

    /// The first executable file called `name`.
    pub fn find(&self, name: &str) -> Option<PathBuf> {
        use std::os::unix::fs::PermissionsExt;
        self.dirs.iter().map(|d| d.join(name)).find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
    }

    /// The `PATH` value, for messages.
    pub fn as_str(&self) -> &str {
        &self.raw
    }
}

// === impl Xtables ===

impl Xtables {
    /// Picks the binaries for `family` like istio-iptables: `-legacy` if its save shows rules,
    /// else `-nft` if it works, else the unsuffixed ones.
    pub fn detect(
        family: Family,
        path: &PathSearch,
        runner: &dyn Runner,
    ) -> Result<Self, BackendError> {
        let base = family.command();
        let candidates = [
            (format!("{base}-legacy"), Some(Backend::Legacy)),
            (format!("{base}-nft"), Some(Backend::Nft)),
            (base.to_string(), None),
        ];
        let mut tried = Vec::new();
        let mut failures = Vec::new();
        let mut found_any = false;
        // Legacy without rules: used only if neither nft nor the plain binaries work.
        let mut legacy_fallback = None;
        for (prefix, backend) in &candidates {
            let save_name = format!("{prefix}-save");
            let restore_name = format!("{prefix}-restore");
            tried.push(format!("{save_name}/{restore_name}"));
            let (Some(save), Some(restore)) = (path.find(&save_name), path.find(&restore_name))
            else {
                continue;
            };
            found_any = true;
            let dump = runner.run(&save, &[], None)?;
            if !dump.success {
                failures.push(format!(
                    "{} ({}): {}",
                    save.display(),
                    dump.status,
                    dump.stderr.trim()
                ));
                continue;
            }
            let version = runner.run(&save, &["--version"], None)?;
            let backend = backend.unwrap_or(if version.stdout.contains("nf_tables") {
                Backend::Nft
            } else {
                Backend::Legacy
            });
            let chosen = Self {
                family,
                backend,
                save,
                restore,
                wait: backend == Backend::Legacy && supports_wait(&version.stdout),
            };
            // Legacy is preferred only when it already holds rules (3+ lines, as Istio checks).
            if legacy_fallback.is_none()
                && prefix.ends_with("-legacy")
                && dump.stdout.matches('\n').count() < 3
            {
                legacy_fallback = Some(chosen);
                continue;
            }
            return Ok(chosen);
        }
        if let Some(legacy) = legacy_fallback {
            return Ok(legacy);
        }
        if !found_any {
            return Err(BackendError::Missing {
                family,
                tried: tried.join(", "),
                path: path.as_str().to_string(),
            });
        }
        Err(BackendError::Unusable {
            family,
            details: failures.join("; "),
        })
    }

    /// `iptables-save` output.
    pub fn save(&self, runner: &dyn Runner) -> Result<String, BackendError> {
        let out = runner.run(&self.save, &[], None)?;
        if out.success {
            Ok(out.stdout)
        } else {
            Err(failed(&self.save, &[], &out))
        }
    }

    /// Feeds `input` to iptables-restore.
    pub fn restore(
        &self,
        runner: &dyn Runner,
        input: &str,
        mode: RestoreMode,
    ) -> Result<(), BackendError> {
        let mut args: Vec<&str> = match mode {
            RestoreMode::Test => vec!["--noflush", "--test"],
            RestoreMode::NoFlush => vec!["--noflush"],
            RestoreMode::Replace => vec![],
        };
        if self.wait && mode != RestoreMode::Test {
            args.push("--wait=30");
        }
        let out = runner.run(&self.restore, &args, Some(input))?;
        if out.success {
            Ok(())
        } else {
            Err(failed(&self.restore, &args, &out))
        }
    }

    /// The restore command line, for logs and dry runs.
    pub fn restore_command(&self) -> String {
        format!("{} --noflush", self.restore.display())
    }
}

fn failed(program: &Path, args: &[&str], out: &Output) -> BackendError {
    let mut command = program.display().to_string();
    for a in args {
        command.push(' ');
        command.push_str(a);
    }
    BackendError::Failed {
        command,
        status: out.status.clone(),
        stderr: out.stderr.trim().to_string(),
    }
}

/// `iptables-save v1.8.9 (legacy)` ⇒ at least 1.6.2, where iptables-restore learnt `--wait`.
fn supports_wait(version_text: &str) -> bool {
    let Some(v) = version_text
        .split_whitespace()
        .find_map(|w| w.strip_prefix('v'))
    else {
        return false;
    };
    let nums: Vec<u32> = v.split('.').map_while(|n| n.parse().ok()).collect();
    nums >= vec![1, 6, 2]
}

//! Applying a plan: read the live tables, decide per family, check every transaction with
//! `iptables-restore --test`, commit them with `--noflush`, and put the tables back from a
//! snapshot if a commit fails, so a failure never leaves rules half applied.

#[cfg(test)]
mod tests;

use crate::backend::{BackendError, RestoreMode, Runner, Xtables};
use crate::rules::{Family, RuleSet, Table};
use crate::state::{CanonicalError, Expected, Presence, SavedState, StateError, snapshot_restore};

/// Why rules were not applied.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// No binaries were detected for a family the plan needs.
    #[error("no iptables binaries were set up for {family}")]
    Unavailable {
        /// The family.
        family: Family,
    },
    /// The live tables could not be read.
    #[error("cannot read the current {family} rules: {source}")]
    Read {
        /// The family.
        family: Family,
        /// Why.
        source: BackendError,
    },
    /// `iptables-save` printed something unexpected.
    #[error("cannot understand the current {family} rules: {source}")]
    Parse {
        /// The family.
        family: Family,
        /// Why.
        source: StateError,
    },
    /// The plan holds something whose installed form is unknown (for example a group name
    /// that does not exist here).
    #[error("cannot check the {family} rules against the tables: {source}")]
    Canonical {
        /// The family.
        family: Family,
        /// Why.
        source: CanonicalError,
    },
    /// Skiff's chains exist but hold other rules, and `--reconcile` was not given.
    #[error(
        "Skiff's chains already exist in the {family} tables but differ from the requested rules (nothing was changed; rerun with --reconcile to replace them):\n  {}",
        diff.join("\n  ")
    )]
    Drift {
        /// The family.
        family: Family,
        /// What differs.
        diff: Vec<String>,
    },
    /// `iptables-restore --test` refused a transaction; nothing was committed.
    #[error("iptables-restore refused the {family} rules, nothing was changed: {source}")]
    Rejected {
        /// The family.
        family: Family,
        /// What iptables-restore said.
        source: BackendError,
    },
    /// A commit failed; the tables were put back (or, if that failed too, it says so).
    #[error("applying the {family} rules failed: {source}; {rollback}")]
    Commit {
        /// The family.
        family: Family,
        /// What iptables-restore said.
        source: BackendError,
        /// How the rollback went.
        rollback: String,
    },
}

/// What to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Install the plan. `reconcile` replaces differing Skiff chains; `force` skips the check.
    Apply {
        /// `--reconcile`.
        reconcile: bool,
        /// `--force-apply`.
        force: bool,
    },
    /// `--cleanup-only`: remove Skiff's chains and jumps.
    Cleanup,
}

/// What happened (or will happen) to one family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// The plan was installed on clean tables.
    Applied,
    /// The plan was already installed; nothing to do.
    Unchanged,
    /// Differing Skiff chains were replaced by the plan.
    Reconciled,
    /// Installed without checking (`--force-apply`).
    Forced,
    /// Skiff's chains and jumps were removed.
    Cleaned,
    /// There was nothing of Skiff's to remove.
    NothingToClean,
}

/// One family's decision and the restore input that carries it out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transaction {
    /// The family.
    pub family: Family,
    /// The decision.
    pub action: Action,
    /// iptables-restore `--noflush` input; `None` when there is nothing to do.
    pub input: Option<String>,
    /// The tables before, for rollback.
    pub before: SavedState,
}

/// Reads and changes tables through the detected binaries.
pub struct Engine<'a> {
    runner: &'a dyn Runner,
    xtables: Vec<Xtables>,
    group_id: &'a dyn Fn(&str) -> Option<u32>,
}

/// Transactions that were committed, kept so a later failure (routes) can undo them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    transactions: Vec<Transaction>,
}

// === impl Action ===

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Action::Applied => "rules applied",
            Action::Unchanged => "rules already present and identical, nothing changed",
            Action::Reconciled => "differing rules replaced (--reconcile)",
            Action::Forced => "rules applied without checking (--force-apply)",
            Action::Cleaned => "Skiff's chains and jumps removed",
            Action::NothingToClean => "no Skiff chains or jumps found, nothing changed",
        })
    }
}

// === impl Engine ===

impl std::fmt::Debug for Engine<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("xtables", &self.xtables)
            .finish_non_exhaustive()
    }
}

impl<'a> Engine<'a> {
    /// An engine over one `Xtables` per family. `group_id` resolves owner group names.
    pub fn new(
        runner: &'a dyn Runner,
        xtables: Vec<Xtables>,
        group_id: &'a dyn Fn(&str) -> Option<u32>,
    ) -> Self {
        Self {
            runner,
            xtables,
            group_id,
        }
    }

    fn xtables(&self, family: Family) -> Result<&Xtables, ApplyError> {
        self.xtables
            .iter()
            .find(|x| x.family == family)
            .ok_or(ApplyError::Unavailable { family })
    }

    /// The live tables of one family.
    pub fn read(&self, family: Family) -> Result<SavedState, ApplyError> {
        let text = self
            .xtables(family)?
            .save(self.runner)
            .map_err(|source| ApplyError::Read { family, source })?;
        SavedState::parse(&text).map_err(|source| ApplyError::Parse { family, source })
    }

    fn expected(&self, rules: &RuleSet, family: Family) -> Result<Expected, ApplyError> {
        Expected::new(rules, family, self.group_id)
            .map_err(|source| ApplyError::Canonical { family, source })
    }

    /// Decides what to do for every family, changing nothing. Any error here means no family
    /// is touched.
    pub fn prepare(&self, rules: &RuleSet, mode: Mode) -> Result<Vec<Transaction>, ApplyError> {
        let mut out = Vec::new();
        for family in rules.families() {
            let before = self.read(family)?;
            let expected = self.expected(rules, family)?;
            let (action, input) = match mode {
                Mode::Cleanup => {
                    let text = expected.cleanup_restore(&before);
                    if text.is_empty() {
                        (Action::NothingToClean, None)
                    } else {
                        (Action::Cleaned, Some(text))
                    }
                }
                Mode::Apply { force: true, .. } => (Action::Forced, Some(rules.render(family))),
                Mode::Apply { reconcile, .. } => match expected.compare(&before) {
                    Presence::Absent => (Action::Applied, Some(rules.render(family))),
                    Presence::Identical => (Action::Unchanged, None),
                    Presence::Differs(_) if reconcile => (
                        Action::Reconciled,
                        Some(expected.reconcile_restore(&before, rules)),
                    ),
                    Presence::Differs(diff) => return Err(ApplyError::Drift { family, diff }),
                },
            };
            out.push(Transaction {
                family,
                action,
                input,
                before,
            });
        }
        Ok(out)
    }

    /// Tests every transaction, then commits them in order. If a commit fails, every family
    /// committed so far (and the failing one) is restored from its snapshot.
    pub fn commit(&self, txs: Vec<Transaction>) -> Result<Committed, ApplyError> {
        for tx in &txs {
            if let Some(input) = &tx.input {
                self.xtables(tx.family)?
                    .restore(self.runner, input, RestoreMode::Test)
                    .map_err(|source| ApplyError::Rejected {
                        family: tx.family,
                        source,
                    })?;
            }
        }
        for (i, tx) in txs.iter().enumerate() {
            let Some(input) = &tx.input else { continue };
            if let Err(source) =
                self.xtables(tx.family)?
                    .restore(self.runner, input, RestoreMode::NoFlush)
            {
                let rollback = self.rollback(&txs[..=i]);
                return Err(ApplyError::Commit {
                    family: tx.family,
                    source,
                    rollback: describe_rollback(rollback),
                });
            }
        }
        Ok(Committed { transactions: txs })
    }

    /// Puts back the tables each transaction touched, newest first.
    pub fn rollback(&self, txs: &[Transaction]) -> Result<(), Vec<String>> {
        let mut errors = Vec::new();
        for tx in txs.iter().rev() {
            let Some(input) = &tx.input else { continue };
            let tables = touched_tables(input);
            let snapshot = snapshot_restore(&tx.before, &tables);
            let result = self
                .xtables(tx.family)
                .map_err(|e| e.to_string())
                .and_then(|x| {
                    x.restore(self.runner, &snapshot, RestoreMode::Replace)
                        .map_err(|e| e.to_string())
                });
            if let Err(e) = result {
                errors.push(format!("{}: {e}", tx.family));
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    /// Compares the live tables with the plan after applying; returns what differs.
    pub fn verify(&self, rules: &RuleSet) -> Result<Vec<String>, ApplyError> {
        let mut diff = Vec::new();
        for family in rules.families() {
            let now = self.read(family)?;
            match self.expected(rules, family)?.compare(&now) {
                Presence::Identical => {}
                Presence::Absent => {
                    diff.push(format!("{family}: no Skiff rules found after applying"))
                }
                Presence::Differs(d) => diff.extend(d),
            }
        }
        Ok(diff)
    }
}

// === impl Committed ===

impl Committed {
    /// What was done per family.
    pub fn actions(&self) -> Vec<(Family, Action)> {
        self.transactions
            .iter()
            .map(|t| (t.family, t.action))
            .collect()
    }

    /// Undoes the committed transactions (used when a later step fails).
    pub fn undo(&self, engine: &Engine<'_>) -> Result<(), Vec<String>> {
        engine.rollback(&self.transactions)
    }

    /// True when anything was written.
    pub fn changed(&self) -> bool {
        self.transactions.iter().any(|t| t.input.is_some())
    }
}

/// Tables named by `*table` lines of a restore input.
pub fn touched_tables(input: &str) -> Vec<Table> {
    let mut tables: Vec<Table> = input
        .lines()
        .filter_map(|l| l.strip_prefix('*'))
        .filter_map(|t| Table::from_name(t.trim()))
        .collect();
    tables.sort();
    tables.dedup();
    tables
}

fn describe_rollback(result: Result<(), Vec<String>>) -> String {
    match result {
        Ok(()) => "the tables were restored to their previous state".to_string(),
        Err(errors) => format!(
            "ROLLBACK FAILED, the tables may be half applied: {}",
            errors.join("; ")
        ),
    }
}

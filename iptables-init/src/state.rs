//! Reads `iptables-save` output, finds what is Skiff's in it, compares it with a plan and
//! writes the restore transactions that remove or replace it.

pub mod canonical;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use crate::rules::{Family, RuleSet, Table, is_builtin, is_own};
pub use canonical::CanonicalError;

/// `iptables-save` output that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    /// A line that is not a comment, table, chain, rule or COMMIT.
    #[error("cannot read line {line_no} of iptables-save output: {line:?}")]
    BadLine {
        /// 1-based line number.
        line_no: usize,
        /// The line.
        line: String,
    },
}

/// One table of `iptables-save` output.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SavedTable {
    /// Table name as printed (`nat`, `mangle`, ...).
    pub name: String,
    /// Chains in listed order: name and policy (`ACCEPT`, `-` for user chains).
    pub chains: Vec<(String, String)>,
    /// Rules in listed order.
    pub rules: Vec<SavedRule>,
}

/// One `-A CHAIN spec` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedRule {
    /// The chain.
    pub chain: String,
    /// Everything after `-A CHAIN `.
    pub spec: String,
}

/// A parsed `iptables-save` dump of one family.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SavedState {
    /// Tables in dump order.
    pub tables: Vec<SavedTable>,
}

/// What one table should hold of Skiff's after the plan is applied, in iptables-save form.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ExpectedTable {
    /// Skiff's chains with their rule specs.
    pub own: BTreeMap<&'static str, Vec<String>>,
    /// Skiff's rules in built-in chains, per chain, in order.
    pub builtin: BTreeMap<&'static str, Vec<String>>,
}

/// A plan for one family, in iptables-save form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    /// The family.
    pub family: Family,
    /// Per table.
    pub tables: BTreeMap<Table, ExpectedTable>,
}

/// How the live tables relate to the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Presence {
    /// No Skiff chain and no jump to one: a clean slate.
    Absent,
    /// Skiff's chains and rules are exactly the plan.
    Identical,
    /// Something of Skiff's is there, but not the plan; the lines say what differs.
    Differs(Vec<String>),
}

// === impl SavedState ===

impl SavedState {
    /// Parses `iptables-save` output (comments and counters are ignored).
    pub fn parse(text: &str) -> Result<Self, StateError> {
        let mut tables: Vec<SavedTable> = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim_end();
            let bad = || StateError::BadLine {
                line_no: i + 1,
                line: line.to_string(),
            };
            if line.is_empty() || line.starts_with('#') || line == "COMMIT" {
                continue;
            }
            if let Some(name) = line.strip_prefix('*') {
                tables.push(SavedTable {
                    name: name.trim().to_string(),
                    ..SavedTable::default()
                });
                continue;
            }
            let table = tables.last_mut().ok_or_else(bad)?;
            if let Some(rest) = line.strip_prefix(':') {
                let mut parts = rest.split_whitespace();
                let name = parts.next().ok_or_else(bad)?;
                let policy = parts.next().ok_or_else(bad)?;
                table.chains.push((name.to_string(), policy.to_string()));
            } else if let Some(rest) = line.strip_prefix("-A ") {
                let (chain, spec) = rest.split_once(' ').unwrap_or((rest, ""));
                table.rules.push(SavedRule {
                    chain: chain.to_string(),
                    spec: spec.to_string(),
                });
            } else {
                return Err(bad());
            }
        }
        Ok(Self { tables })
    }

    /// The table with this name, if dumped.
    pub fn table(&self, table: Table) -> Option<&SavedTable> {
        self.tables.iter().find(|t| t.name == table.name())
    }

    /// True when any Skiff chain exists or any rule jumps to one.
    pub fn has_own(&self) -> bool {
        self.tables.iter().any(|t| {
            t.chains.iter().any(|(c, _)| is_own(c)) || t.rules.iter().any(|r| r.jumps_to_own())
        })
    }
}

// === impl SavedTable ===

impl SavedTable {
    /// Skiff's chains present in this table.
    pub fn own_chains(&self) -> Vec<&str> {
        self.chains
            .iter()
            .map(|(c, _)| c.as_str())
            .filter(|c| is_own(c))
            .collect()
    }

    /// Skiff's rules in built-in chains: jumps to Skiff chains, plus rules the plan puts there
    /// (for example the `-i eth1 -j RETURN` of `-k`), in dump order.
    pub fn own_builtin_rules<'a>(&'a self, expected: Option<&ExpectedTable>) -> Vec<&'a SavedRule> {
        self.rules
            .iter()
            .filter(|r| is_builtin(&r.chain))
            .filter(|r| {
                r.jumps_to_own()
                    || expected
                        .and_then(|e| e.builtin.get(r.chain.as_str()))
                        .is_some_and(|specs| specs.contains(&r.spec))
            })
            .collect()
    }

    /// Skiff's lines of this table in iptables-save order and form: chain headers (counters
    /// zeroed), built-in chain rules, then Skiff chain rules.
    pub fn own_lines(&self, expected: Option<&ExpectedTable>) -> Vec<String> {
        let mut lines: Vec<String> = self
            .own_chains()
            .iter()
            .map(|c| format!(":{c} - [0:0]"))
            .collect();
        let builtin = self.own_builtin_rules(expected);
        for r in &self.rules {
            let own_chain = is_own(&r.chain);
            let own_builtin = builtin.iter().any(|b| std::ptr::eq(*b, r));
            if own_chain || own_builtin {
                lines.push(format!("-A {} {}", r.chain, r.spec).trim_end().to_string());
            }
        }
        lines
    }
}

// === impl SavedRule ===

impl SavedRule {
    /// The `-j` target, if any.
    pub fn target(&self) -> Option<String> {
        let tokens = tokenize(&self.spec);
        tokens
            .iter()
            .position(|t| t == "-j")
            .and_then(|i| tokens.get(i + 1).cloned())
    }

    /// True when the rule jumps to a Skiff chain.
    pub fn jumps_to_own(&self) -> bool {
        self.target().is_some_and(|t| is_own(&t))
    }
}

// === impl Expected ===

impl Expected {
    /// The plan for `family` in iptables-save form. `group_id` resolves owner group names.
    pub fn new(
        rules: &RuleSet,
        family: Family,
        group_id: &dyn Fn(&str) -> Option<u32>,
    ) -> Result<Self, CanonicalError> {
        let mut tables: BTreeMap<Table, ExpectedTable> = BTreeMap::new();
        for chain in rules.final_chains(family) {
            let specs = chain
                .rules
                .iter()
                .map(|args| canonical::saved_spec(family, args, group_id))
                .collect::<Result<Vec<_>, _>>()?;
            let t = tables.entry(chain.table).or_default();
            if is_builtin(chain.chain) {
                t.builtin.entry(chain.chain).or_default().extend(specs);
            } else {
                t.own.entry(chain.chain).or_default().extend(specs);
            }
        }
        Ok(Self { family, tables })
    }

    /// The lines `SavedTable::own_lines` must return for `table` once the plan is applied.
    pub fn lines(&self, table: Table) -> Vec<String> {
        let Some(t) = self.tables.get(&table) else {
            return Vec::new();
        };
        // iptables-save lists chain headers built-in first, then user chains by name, and rules
        // grouped by chain in that same order. BTreeMap iteration gives the sorted names.
        let mut lines: Vec<String> = t.own.keys().map(|c| format!(":{c} - [0:0]")).collect();
        for chain in table.builtin_chains() {
            for spec in t.builtin.get(chain).into_iter().flatten() {
                lines.push(format!("-A {chain} {spec}"));
            }
        }
        for (chain, specs) in &t.own {
            for spec in specs {
                lines.push(format!("-A {chain} {spec}"));
            }
        }
        lines
    }

    /// Compares the live tables with the plan.
    pub fn compare(&self, saved: &SavedState) -> Presence {
        if !saved.has_own() {
            return Presence::Absent;
        }
        let mut diff = Vec::new();
        for table in Table::ALL {
            let want = self.lines(table);
            let have = saved
                .table(table)
                .map(|t| t.own_lines(self.tables.get(&table)))
                .unwrap_or_default();
            if want != have {
                for l in want.iter().filter(|l| !have.contains(l)) {
                    diff.push(format!("{} {table}: missing   {l}", self.family));
                }
                for l in have.iter().filter(|l| !want.contains(l)) {
                    diff.push(format!("{} {table}: unexpected {l}", self.family));
                }
                if diff.is_empty() {
                    diff.push(format!(
                        "{} {table}: same rules in a different order",
                        self.family
                    ));
                }
            }
        }
        if diff.is_empty() {
            Presence::Identical
        } else {
            Presence::Differs(diff)
        }
    }

    /// A `--noflush` restore transaction removing every Skiff rule and chain; empty if none.
    pub fn cleanup_restore(&self, saved: &SavedState) -> String {
        let mut out = String::new();
        for table in Table::ALL {
            let Some(t) = saved.table(table) else {
                continue;
            };
            let removal = removal(t, self.tables.get(&table), &[]);
            if !removal.is_empty() {
                out.push_str(&format!("*{table}\n{removal}COMMIT\n"));
            }
        }
        out
    }

    /// A `--noflush` restore transaction replacing whatever Skiff has with the plan, table by
    /// table: old jumps deleted, old chains flushed (and deleted if the plan drops them), then
    /// the plan's rules.
    pub fn reconcile_restore(&self, saved: &SavedState, rules: &RuleSet) -> String {
        let mut out = String::new();
        for table in Table::ALL {
            let planned: Vec<&'static str> = rules.created_chains(self.family, table);
            let saved_table = saved.table(table);
            let removal = saved_table
                .map(|t| removal(t, self.tables.get(&table), &planned))
                .unwrap_or_default();
            let existing: Vec<&str> = saved_table.map(|t| t.own_chains()).unwrap_or_default();
            let mut body = removal;
            for chain in &planned {
                if !existing.contains(chain) {
                    body.push_str(&format!("-N {chain}\n"));
                }
            }
            for rule in rules.rules(self.family).iter().filter(|r| r.table == table) {
                body.push_str(&rule.command_line());
                body.push('\n');
            }
            if !body.is_empty() {
                out.push_str(&format!("*{table}\n{body}COMMIT\n"));
            }
        }
        out
    }
}

/// Deletes Skiff's built-in chain rules, flushes Skiff's chains and deletes those not in `keep`.
fn removal(table: &SavedTable, expected: Option<&ExpectedTable>, keep: &[&str]) -> String {
    let mut out = String::new();
    for r in table.own_builtin_rules(expected) {
        out.push_str(format!("-D {} {}", r.chain, r.spec).trim_end());
        out.push('\n');
    }
    let chains = table.own_chains();
    for c in &chains {
        out.push_str(&format!(":{c} - [0:0]\n"));
    }
    for c in chains.iter().filter(|c| !keep.contains(c)) {
        out.push_str(&format!("-X {c}\n"));
    }
    out
}

/// A full restore (no `--noflush`) putting `tables` back as they were in `saved`; tables that
/// did not exist come back empty with ACCEPT policies.
pub fn snapshot_restore(saved: &SavedState, tables: &[Table]) -> String {
    let mut out = String::new();
    for table in tables {
        out.push_str(&format!("*{table}\n"));
        match saved.table(*table) {
            Some(t) => {
                for (chain, policy) in &t.chains {
                    out.push_str(&format!(":{chain} {policy} [0:0]\n"));
                }
                for r in &t.rules {
                    out.push_str(format!("-A {} {}", r.chain, r.spec).trim_end());
                    out.push('\n');
                }
            }
            None => {
                for chain in table.builtin_chains() {
                    out.push_str(&format!(":{chain} ACCEPT [0:0]\n"));
                }
            }
        }
        out.push_str("COMMIT\n");
    }
    out
}

/// Splits a rule spec into arguments the way iptables-restore does (double quotes group).
pub fn tokenize(spec: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_quotes = false;
    let mut has_token = false;
    let mut chars = spec.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' if in_quotes => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            '"' => {
                in_quotes = !in_quotes;
                has_token = true;
            }
            c if c.is_whitespace() && !in_quotes => {
                if has_token {
                    out.push(std::mem::take(&mut cur));
                    has_token = false;
                }
            }
            c => {
                cur.push(c);
                has_token = true;
            }
        }
    }
    if has_token {
        out.push(cur);
    }
    out
}

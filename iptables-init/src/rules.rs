//! The rule set `plan` produces and its `iptables-restore` rendering, in istio-iptables' format.

use std::collections::BTreeMap;
use std::fmt;

/// Chains Skiff (like istio-iptables) creates and owns. Cleanup removes exactly these and the
/// rules in built-in chains that jump to them or that the plan puts there.
pub const OWN_CHAINS: [&str; 8] = [
    ISTIO_INBOUND,
    ISTIO_IN_REDIRECT,
    ISTIO_OUTPUT,
    ISTIO_REDIRECT,
    ISTIO_DIVERT,
    ISTIO_TPROXY,
    ISTIO_OUTPUT_DNS,
    ISTIO_DROP,
];

/// Inbound capture chain (nat, or mangle in TPROXY mode; raw for DNS conntrack zones).
pub const ISTIO_INBOUND: &str = "ISTIO_INBOUND";
/// REDIRECT to the inbound capture port.
pub const ISTIO_IN_REDIRECT: &str = "ISTIO_IN_REDIRECT";
/// Outbound capture decisions.
pub const ISTIO_OUTPUT: &str = "ISTIO_OUTPUT";
/// REDIRECT to the outbound proxy port.
pub const ISTIO_REDIRECT: &str = "ISTIO_REDIRECT";
/// TPROXY: mark established inbound packets and accept them.
pub const ISTIO_DIVERT: &str = "ISTIO_DIVERT";
/// TPROXY: the TPROXY target itself.
pub const ISTIO_TPROXY: &str = "ISTIO_TPROXY";
/// DNS redirection and conntrack zones.
pub const ISTIO_OUTPUT_DNS: &str = "ISTIO_OUTPUT_DNS";
/// `--drop-invalid`.
pub const ISTIO_DROP: &str = "ISTIO_DROP";

/// The kernel's built-in chains; never created or deleted.
pub const BUILTIN_CHAINS: [&str; 5] = ["INPUT", "OUTPUT", "FORWARD", "PREROUTING", "POSTROUTING"];

/// True for a chain the kernel provides.
pub fn is_builtin(chain: &str) -> bool {
    BUILTIN_CHAINS.contains(&chain)
}

/// True for a chain Skiff owns.
pub fn is_own(chain: &str) -> bool {
    OWN_CHAINS.contains(&chain)
}

/// IPv4 (`iptables`) or IPv6 (`ip6tables`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    /// `iptables`.
    V4,
    /// `ip6tables`.
    V6,
}

/// An iptables table. The order is the one istio-iptables renders them in (sorted by name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Table {
    /// `filter`.
    Filter,
    /// `mangle`.
    Mangle,
    /// `nat`.
    Nat,
    /// `raw`.
    Raw,
}

/// Where a rule goes in its chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Position {
    /// `-A`: at the end.
    Append,
    /// `-I n`: at 1-based position `n`.
    Insert(usize),
}

/// One `-A`/`-I` command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// The table.
    pub table: Table,
    /// The chain (built-in or one of [`OWN_CHAINS`]).
    pub chain: &'static str,
    /// Append or insert.
    pub position: Position,
    /// Match and target arguments, exactly as istio-iptables passes them.
    pub args: Vec<String>,
}

/// A chain's content after every rule of a family has been applied to an empty table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainContent {
    /// The table.
    pub table: Table,
    /// The chain name.
    pub chain: &'static str,
    /// Rules in final order (arguments only).
    pub rules: Vec<Vec<String>>,
}

/// The full plan: rules per family, in the order istio-iptables generates them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RuleSet {
    v4: Vec<Rule>,
    v6: Vec<Rule>,
    ipv6: bool,
}

// === impl Family ===

impl Family {
    /// The command prefix: `iptables` or `ip6tables`.
    pub fn command(self) -> &'static str {
        match self {
            Family::V4 => "iptables",
            Family::V6 => "ip6tables",
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        })
    }
}

// === impl Table ===

impl Table {
    /// Every table, in rendering order.
    pub const ALL: [Table; 4] = [Table::Filter, Table::Mangle, Table::Nat, Table::Raw];

    /// The table name.
    pub fn name(self) -> &'static str {
        match self {
            Table::Filter => "filter",
            Table::Mangle => "mangle",
            Table::Nat => "nat",
            Table::Raw => "raw",
        }
    }

    /// The table for a name.
    pub fn from_name(name: &str) -> Option<Self> {
        Table::ALL.into_iter().find(|t| t.name() == name)
    }

    /// The built-in chains of the table, in the order iptables-save lists them.
    pub fn builtin_chains(self) -> &'static [&'static str] {
        match self {
            Table::Filter => &["INPUT", "FORWARD", "OUTPUT"],
            Table::Mangle => &["PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"],
            Table::Nat => &["PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"],
            Table::Raw => &["PREROUTING", "OUTPUT"],
        }
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

// === impl Rule ===

impl Rule {
    /// The chain this rule jumps to, if its last two arguments are `-j TARGET`.
    pub fn jump_target(&self) -> Option<&str> {
        match self.args.as_slice() {
            [.., j, target] if j == "-j" => Some(target),
            _ => None,
        }
    }

    /// The `-A`/`-I` command line as iptables-restore reads it.
    pub fn command_line(&self) -> String {
        let mut line = match self.position {
            Position::Append => format!("-A {}", self.chain),
            Position::Insert(n) => format!("-I {} {n}", self.chain),
        };
        for a in &self.args {
            line.push(' ');
            line.push_str(a);
        }
        line
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "-t {} {}", self.table, self.command_line())
    }
}

// === impl RuleSet ===

impl RuleSet {
    /// An empty rule set; `ipv6` says whether ip6tables is programmed at all.
    pub fn new(ipv6: bool) -> Self {
        Self {
            v4: Vec::new(),
            v6: Vec::new(),
            ipv6,
        }
    }

    /// The families this rule set programs: IPv4 always, IPv6 when enabled.
    pub fn families(&self) -> Vec<Family> {
        if self.ipv6 {
            vec![Family::V4, Family::V6]
        } else {
            vec![Family::V4]
        }
    }

    /// The rules of one family, in generation order.
    pub fn rules(&self, family: Family) -> &[Rule] {
        match family {
            Family::V4 => &self.v4,
            Family::V6 => &self.v6,
        }
    }

    /// Adds a rule to IPv4 only.
    pub fn push_v4(&mut self, rule: Rule) {
        self.v4.push(rule);
    }

    /// Adds a rule to IPv6 only (dropped when IPv6 is off, as istio-iptables does).
    pub fn push_v6(&mut self, rule: Rule) {
        if self.ipv6 {
            self.v6.push(rule);
        }
    }

    /// Adds a rule to both families.
    pub fn push(&mut self, rule: Rule) {
        self.push_v6(rule.clone());
        self.push_v4(rule);
    }

    /// Tables this family touches, in rendering order.
    pub fn tables(&self, family: Family) -> Vec<Table> {
        let mut tables: Vec<Table> = self.rules(family).iter().map(|r| r.table).collect();
        tables.sort();
        tables.dedup();
        tables
    }

    /// Non-built-in chains created in `table`, in istio-iptables' `-N` order: first the chains
    /// that have rules (by first rule), then chains only jumped to.
    pub fn created_chains(&self, family: Family, table: Table) -> Vec<&'static str> {
        let rules: Vec<&Rule> = self
            .rules(family)
            .iter()
            .filter(|r| r.table == table)
            .collect();
        let mut chains: Vec<&'static str> = Vec::new();
        for r in &rules {
            if !is_builtin(r.chain) && !chains.contains(&r.chain) {
                chains.push(r.chain);
            }
        }
        for r in &rules {
            if let Some(target) = r.jump_target()
                && let Some(own) = OWN_CHAINS.iter().find(|c| **c == target)
                && !chains.contains(own)
            {
                chains.push(own);
            }
        }
        chains
    }

    /// The iptables-restore input for one table (`* nat` ... `COMMIT`), empty if unused.
    pub fn render_table(&self, family: Family, table: Table) -> String {
        let rules: Vec<&Rule> = self
            .rules(family)
            .iter()
            .filter(|r| r.table == table)
            .collect();
        if rules.is_empty() {
            return String::new();
        }
        let mut out = format!("* {table}\n");
        for chain in self.created_chains(family, table) {
            out.push_str("-N ");
            out.push_str(chain);
            out.push('\n');
        }
        for r in rules {
            out.push_str(&r.command_line());
            out.push('\n');
        }
        out.push_str("COMMIT\n");
        out
    }

    /// The iptables-restore input for one family: every table it touches, in name order,
    /// exactly as istio-iptables feeds `iptables-restore --noflush`.
    pub fn render(&self, family: Family) -> String {
        Table::ALL
            .into_iter()
            .map(|t| self.render_table(family, t))
            .collect()
    }

    /// Every family's restore input, each under a `# iptables-restore --noflush (IPv4)` comment
    /// line (iptables-restore ignores comments). This is what `--dry-run` prints.
    pub fn render_all(&self) -> String {
        let mut out = String::new();
        for family in self.families() {
            out.push_str(&format!(
                "# {}-restore --noflush ({family})\n",
                family.command()
            ));
            out.push_str(&self.render(family));
        }
        out
    }

    /// What each touched chain holds once this family's rules are applied to empty tables:
    /// created chains (even empty ones) and built-in chains, in first-use order.
    pub fn final_chains(&self, family: Family) -> Vec<ChainContent> {
        let mut chains: Vec<ChainContent> = Vec::new();
        for table in self.tables(family) {
            for chain in self.created_chains(family, table) {
                chains.push(ChainContent {
                    table,
                    chain,
                    rules: Vec::new(),
                });
            }
        }
        for rule in self.rules(family) {
            let idx = match chains
                .iter()
                .position(|c| c.table == rule.table && c.chain == rule.chain)
            {
                Some(i) => i,
                None => {
                    chains.push(ChainContent {
                        table: rule.table,
                        chain: rule.chain,
                        rules: Vec::new(),
                    });
                    chains.len() - 1
                }
            };
            let content = &mut chains[idx].rules;
            match rule.position {
                Position::Append => content.push(rule.args.clone()),
                Position::Insert(n) => {
                    let at = n.saturating_sub(1).min(content.len());
                    content.insert(at, rule.args.clone());
                }
            }
        }
        chains
    }

    /// Rules per table, grouped for display (used by `--dry-run --cleanup-only`).
    pub fn builtin_rules(
        &self,
        family: Family,
    ) -> BTreeMap<Table, Vec<(&'static str, Vec<String>)>> {
        let mut out: BTreeMap<Table, Vec<(&'static str, Vec<String>)>> = BTreeMap::new();
        for c in self.final_chains(family) {
            if is_builtin(c.chain) {
                for r in c.rules {
                    out.entry(c.table).or_default().push((c.chain, r));
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a rule from an argument list written as one string (every argument is one token).
    fn rule(table: Table, chain: &'static str, position: Position, args: &[&str]) -> Rule {
        Rule {
            table,
            chain,
            position,
            args: args.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn sample() -> RuleSet {
        let mut rs = RuleSet::new(false);
        rs.push(rule(
            Table::Nat,
            ISTIO_OUTPUT,
            Position::Append,
            &["-j", "RETURN"],
        ));
        rs.push(rule(
            Table::Nat,
            "OUTPUT",
            Position::Append,
            &["-j", ISTIO_OUTPUT],
        ));
        rs.push(rule(
            Table::Nat,
            "OUTPUT",
            Position::Append,
            &["-j", ISTIO_REDIRECT],
        ));
        rs.push(rule(
            Table::Nat,
            ISTIO_OUTPUT,
            Position::Insert(1),
            &["-o", "lo", "-j", "RETURN"],
        ));
        rs
    }

    #[test]
    fn render_declares_chains_then_jump_only_targets() {
        let text = sample().render(Family::V4);
        assert_eq!(
            text,
            "* nat\n-N ISTIO_OUTPUT\n-N ISTIO_REDIRECT\n-A ISTIO_OUTPUT -j RETURN\n\
             -A OUTPUT -j ISTIO_OUTPUT\n-A OUTPUT -j ISTIO_REDIRECT\n\
             -I ISTIO_OUTPUT 1 -o lo -j RETURN\nCOMMIT\n"
        );
    }

    #[test]
    fn ipv6_rules_are_dropped_when_ipv6_is_off() {
        let rs = sample();
        assert!(rs.rules(Family::V6).is_empty());
        assert_eq!(rs.families(), vec![Family::V4]);
        assert_eq!(rs.render(Family::V6), "");
    }

    #[test]
    fn final_chains_apply_inserts() {
        let chains = sample().final_chains(Family::V4);
        let out = chains.iter().find(|c| c.chain == ISTIO_OUTPUT).unwrap();
        assert_eq!(out.rules[0], vec!["-o", "lo", "-j", "RETURN"]);
        assert_eq!(out.rules[1], vec!["-j", "RETURN"]);
        let redirect = chains.iter().find(|c| c.chain == ISTIO_REDIRECT).unwrap();
        assert!(redirect.rules.is_empty());
    }
}

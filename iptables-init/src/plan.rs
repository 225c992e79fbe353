//! `plan`: the pure function from a [`Config`] to the rules istio-iptables would program.
//!
//! The rules and their order follow istio/istio `tools/istio-iptables/pkg/capture/run.go` at
//! commit 0098d99f8e43fe516aaac5a84a131b4ce3c8b9d1 (the Istio 1.2x line with
//! `ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR`, the `ISTIO_DROP` chain, `-j ISTIO_OUTPUT` for all
//! protocols and per-family DNS jumps), cross-checked against the golden files in
//! `tools/istio-iptables/pkg/capture/testdata`. Only facts were taken from there; this is an
//! independent implementation. Later Istio commits (e.g. e8f9bf5) fold port lists into
//! `-m multiport`; Skiff keeps one rule per port, as the commit above does.

mod dns;
#[cfg(test)]
mod tests;
mod tproxy;

use crate::config::{Cidr, Config, InboundPorts, InterceptionMode, OutboundCidrs, OwnerGroups};
use crate::rules::{
    ISTIO_DROP, ISTIO_IN_REDIRECT, ISTIO_INBOUND, ISTIO_OUTPUT, ISTIO_REDIRECT, Position, Rule,
    RuleSet, Table,
};

/// The mark Envoy's traffic to the app gets in TPROXY mode (Istio's `OutboundMark`).
pub const OUTBOUND_MARK: u32 = 1338;
/// Where istio-agent listens for DNS.
pub const DNS_AGENT_PORT: u16 = 15053;
/// Inbound passthrough source addresses (Envoy binds these to reach the app).
const PASSTHROUGH_V4: &str = "127.0.0.6/32";
const PASSTHROUGH_V6: &str = "::6/128";
/// IPv6 loopback as Istio writes it (not configurable).
const LOOPBACK_V6: &str = "::1/128";
/// Stands for the family-specific address in a versioned rule spec.
const IP: &str = "%IP%";

const PREROUTING: &str = "PREROUTING";
const OUTPUT: &str = "OUTPUT";

/// Computes every rule for `cfg`, per family, in istio-iptables' order. Pure: no IO, no lookups.
pub fn plan(cfg: &Config) -> RuleSet {
    Planner::new(cfg).run()
}

/// DNS capture is on only when there is something to capture (istio-iptables logs a warning
/// and turns it off otherwise).
pub fn effective_redirect_dns(cfg: &Config) -> bool {
    cfg.redirect_dns
        && (cfg.capture_all_dns || !cfg.dns_servers_v4.is_empty() || !cfg.dns_servers_v6.is_empty())
}

/// Which families a rule goes to.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Fam {
    Both,
    V4,
    V6,
}

struct Planner<'a> {
    cfg: &'a Config,
    rs: RuleSet,
    /// `ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR`, rendered.
    lo_v4: String,
}

// === impl Planner ===

impl<'a> Planner<'a> {
    fn new(cfg: &'a Config) -> Self {
        Self {
            cfg,
            rs: RuleSet::new(cfg.enable_ipv6),
            lo_v4: cfg.ipv4_loopback.to_string(),
        }
    }

    /// Adds a rule. `spec` is the argument list as one line; no argument contains a space
    /// (every value was validated), so splitting on whitespace is exact.
    fn add(&mut self, fam: Fam, table: Table, chain: &'static str, position: Position, spec: &str) {
        let rule = Rule {
            table,
            chain,
            position,
            args: spec.split_whitespace().map(str::to_string).collect(),
        };
        match fam {
            Fam::Both => self.rs.push(rule),
            Fam::V4 => self.rs.push_v4(rule),
            Fam::V6 => self.rs.push_v6(rule),
        }
    }

    /// `-A` in both families.
    fn append(&mut self, table: Table, chain: &'static str, spec: &str) {
        self.add(Fam::Both, table, chain, Position::Append, spec);
    }

    /// Istio's `AppendVersionedRule`: `%IP%` becomes `v4` for IPv4 and `v6` for IPv6.
    fn append_versioned(
        &mut self,
        table: Table,
        chain: &'static str,
        v4: &str,
        v6: &str,
        spec: &str,
    ) {
        self.add(
            Fam::V4,
            table,
            chain,
            Position::Append,
            &spec.replace(IP, v4),
        );
        self.add(
            Fam::V6,
            table,
            chain,
            Position::Append,
            &spec.replace(IP, v6),
        );
    }

    fn run(mut self) -> RuleSet {
        let cfg = self.cfg;
        let lo = self.lo_v4.clone();
        let redirect_dns = effective_redirect_dns(cfg);
        let (include_v4, include_v6) = split_include(&cfg.outbound_cidrs);
        let include_has_loopback = include_v4.loopback || include_v6.loopback;

        for iface in &cfg.exclude_interfaces {
            self.append(Table::Nat, PREROUTING, &format!("-i {iface} -j RETURN"));
            self.append(Table::Nat, OUTPUT, &format!("-o {iface} -j RETURN"));
        }
        if cfg.mode == InterceptionMode::Tproxy {
            for iface in &cfg.exclude_interfaces {
                self.append(Table::Mangle, PREROUTING, &format!("-i {iface} -j RETURN"));
                self.append(Table::Mangle, OUTPUT, &format!("-o {iface} -j RETURN"));
            }
        }
        for iface in &cfg.kube_virt_interfaces {
            let spec = format!("-i {iface} -j RETURN");
            self.add(
                Fam::Both,
                Table::Nat,
                PREROUTING,
                Position::Insert(1),
                &spec,
            );
        }
        if cfg.drop_invalid {
            self.append(
                Table::Mangle,
                PREROUTING,
                &format!("-m conntrack --ctstate INVALID -j {ISTIO_DROP}"),
            );
            self.append(Table::Mangle, ISTIO_DROP, "-j DROP");
        }

        let tunnel = cfg.inbound_tunnel_port;
        self.append(
            Table::Nat,
            ISTIO_INBOUND,
            &format!("-p tcp --dport {tunnel} -j RETURN"),
        );
        let proxy = cfg.proxy_port;
        self.append(
            Table::Nat,
            ISTIO_REDIRECT,
            &format!("-p tcp -j REDIRECT --to-ports {proxy}"),
        );
        let capture = cfg.inbound_capture_port;
        self.append(
            Table::Nat,
            ISTIO_IN_REDIRECT,
            &format!("-p tcp -j REDIRECT --to-ports {capture}"),
        );

        self.inbound();

        self.append(Table::Nat, OUTPUT, &format!("-j {ISTIO_OUTPUT}"));
        for port in &cfg.outbound_ports_exclude {
            self.append(
                Table::Nat,
                ISTIO_OUTPUT,
                &format!("-p tcp --dport {port} -j RETURN"),
            );
            self.append(
                Table::Nat,
                ISTIO_OUTPUT,
                &format!("-p udp --dport {port} -j RETURN"),
            );
        }
        let spec = format!("-o lo -s {IP} -j RETURN");
        self.append_versioned(
            Table::Nat,
            ISTIO_OUTPUT,
            PASSTHROUGH_V4,
            PASSTHROUGH_V6,
            &spec,
        );

        for uid in &cfg.proxy_uids {
            self.owner_bypass("--uid-owner", *uid, redirect_dns, include_has_loopback);
        }
        for gid in &cfg.proxy_gids {
            self.owner_bypass("--gid-owner", *gid, redirect_dns, include_has_loopback);
        }
        self.owner_groups();
        if redirect_dns {
            self.dns();
        }

        let spec = format!("-d {IP} -j RETURN");
        self.append_versioned(Table::Nat, ISTIO_OUTPUT, &lo, LOOPBACK_V6, &spec);
        for cidr in &cfg.outbound_cidrs_exclude {
            let fam = if cidr.is_ipv4() { Fam::V4 } else { Fam::V6 };
            self.add(
                fam,
                Table::Nat,
                ISTIO_OUTPUT,
                Position::Append,
                &format!("-d {cidr} -j RETURN"),
            );
        }
        for port in &cfg.outbound_ports_include {
            self.append(
                Table::Nat,
                ISTIO_OUTPUT,
                &format!("-p tcp --dport {port} -j {ISTIO_REDIRECT}"),
            );
        }
        self.outbound_include(&include_v4, Fam::V4);
        self.outbound_include(&include_v6, Fam::V6);

        if cfg.mode == InterceptionMode::Tproxy {
            self.tproxy_marks();
        }
        self.rs
    }

    /// `-b`/`-d`: the inbound jump and per-port decisions (nat, or mangle for TPROXY).
    fn inbound(&mut self) {
        let cfg = self.cfg;
        let tproxy = cfg.mode == InterceptionMode::Tproxy;
        let table = if tproxy { Table::Mangle } else { Table::Nat };
        match &cfg.inbound_ports {
            InboundPorts::None => {}
            InboundPorts::All => {
                if tproxy {
                    self.tproxy_chains();
                }
                self.append(table, PREROUTING, &format!("-p tcp -j {ISTIO_INBOUND}"));
                for port in &cfg.inbound_ports_exclude {
                    self.append(
                        table,
                        ISTIO_INBOUND,
                        &format!("-p tcp --dport {port} -j RETURN"),
                    );
                }
                if tproxy {
                    self.tproxy_inbound("");
                } else {
                    self.append(
                        Table::Nat,
                        ISTIO_INBOUND,
                        &format!("-p tcp -j {ISTIO_IN_REDIRECT}"),
                    );
                }
            }
            InboundPorts::Only(ports) => {
                if tproxy {
                    self.tproxy_chains();
                }
                self.append(table, PREROUTING, &format!("-p tcp -j {ISTIO_INBOUND}"));
                for port in ports {
                    if tproxy {
                        self.tproxy_inbound(&format!("--dport {port} "));
                    } else {
                        let spec = format!("-p tcp --dport {port} -j {ISTIO_IN_REDIRECT}");
                        self.append(Table::Nat, ISTIO_INBOUND, &spec);
                    }
                }
            }
        }
    }

    /// The three per-uid (or per-gid) rules: app-to-self via the service VIP goes back through
    /// inbound, app-to-self on lo is left alone, and the proxy's own traffic is never captured.
    fn owner_bypass(
        &mut self,
        flag: &str,
        id: u32,
        redirect_dns: bool,
        include_has_loopback: bool,
    ) {
        let lo = self.lo_v4.clone();
        let tunnel = self.cfg.inbound_tunnel_port;
        // Only the uid rule skips DNS: istio-iptables writes the gid variant without it.
        let ports = if redirect_dns && flag == "--uid-owner" {
            format!("-m multiport ! --dports 53,{tunnel}")
        } else {
            format!("! --dport {tunnel}")
        };
        let spec =
            format!("-o lo ! -d {IP} -p tcp {ports} -m owner {flag} {id} -j {ISTIO_IN_REDIRECT}");
        self.append_versioned(Table::Nat, ISTIO_OUTPUT, &lo, LOOPBACK_V6, &spec);
        if !include_has_loopback {
            let spec = if redirect_dns {
                format!("-o lo -p tcp ! --dport 53 -m owner ! {flag} {id} -j RETURN")
            } else {
                format!("-o lo -m owner ! {flag} {id} -j RETURN")
            };
            self.append(Table::Nat, ISTIO_OUTPUT, &spec);
        }
        self.append(
            Table::Nat,
            ISTIO_OUTPUT,
            &format!("-m owner {flag} {id} -j RETURN"),
        );
    }

    /// `ISTIO_OUTBOUND_OWNER_GROUPS[_EXCLUDE]`.
    fn owner_groups(&mut self) {
        match &self.cfg.owner_groups {
            OwnerGroups::AllExcept(groups) => {
                for g in groups {
                    self.append(
                        Table::Nat,
                        ISTIO_OUTPUT,
                        &format!("-m owner --gid-owner {g} -j RETURN"),
                    );
                }
            }
            OwnerGroups::Only(groups) => {
                let mut spec = String::new();
                for g in groups {
                    spec.push_str(&format!("-m owner ! --gid-owner {g} "));
                }
                spec.push_str("-j RETURN");
                self.append(Table::Nat, ISTIO_OUTPUT, &spec);
            }
        }
    }

    /// `-i` for one family, plus the `-k` interfaces whose traffic is treated as outbound.
    fn outbound_include(&mut self, include: &FamilyInclude, fam: Fam) {
        let cfg = self.cfg;
        if include.all {
            self.add(
                fam,
                Table::Nat,
                ISTIO_OUTPUT,
                Position::Append,
                &format!("-j {ISTIO_REDIRECT}"),
            );
            for iface in &cfg.kube_virt_interfaces {
                let spec = format!("-i {iface} -j {ISTIO_REDIRECT}");
                self.add(fam, Table::Nat, PREROUTING, Position::Insert(1), &spec);
            }
        } else {
            for cidr in &include.cidrs {
                for iface in &cfg.kube_virt_interfaces {
                    let spec = format!("-i {iface} -d {cidr} -j {ISTIO_REDIRECT}");
                    self.add(fam, Table::Nat, PREROUTING, Position::Insert(1), &spec);
                }
                let spec = format!("-d {cidr} -j {ISTIO_REDIRECT}");
                self.add(fam, Table::Nat, ISTIO_OUTPUT, Position::Append, &spec);
            }
        }
    }
}

/// `-i` split per family, as Istio's `separateV4V6`.
#[derive(Default)]
struct FamilyInclude {
    all: bool,
    cidrs: Vec<Cidr>,
    loopback: bool,
}

fn split_include(include: &OutboundCidrs) -> (FamilyInclude, FamilyInclude) {
    let mut v4 = FamilyInclude::default();
    let mut v6 = FamilyInclude::default();
    match include {
        OutboundCidrs::None => {}
        OutboundCidrs::All => {
            v4.all = true;
            v6.all = true;
        }
        OutboundCidrs::Only(cidrs) => {
            for c in cidrs {
                let side = if c.is_ipv4() { &mut v4 } else { &mut v6 };
                side.loopback |= c.is_loopback();
                side.cidrs.push(*c);
            }
        }
    }
    (v4, v6)
}

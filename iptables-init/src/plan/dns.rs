//! DNS capture: port 53 to istio-agent on 15053 and the conntrack zone split (Istio's
//! `SetupDNSRedir` and `addDNSConntrackZones`).

use super::{DNS_AGENT_PORT, Fam, OUTPUT, PREROUTING, Planner};
use crate::rules::{ISTIO_INBOUND, ISTIO_OUTPUT, ISTIO_OUTPUT_DNS, Position, Table};

// === impl Planner ===

impl Planner<'_> {
    /// Redirects DNS to the agent, for every server in resolv.conf or (capture-all) for all.
    pub(super) fn dns(&mut self) {
        let cfg = self.cfg;
        let all = cfg.capture_all_dns;
        let agent = DNS_AGENT_PORT;
        let servers: Vec<(Fam, String)> = cfg
            .dns_servers_v4
            .iter()
            .map(|a| (Fam::V4, format!("{a}/32")))
            .chain(
                cfg.dns_servers_v6
                    .iter()
                    .map(|a| (Fam::V6, format!("{a}/128"))),
            )
            .collect();
        let add = |p: &mut Self, fam, table, chain, spec: &str| {
            p.add(fam, table, chain, Position::Append, spec)
        };

        add(
            self,
            Fam::Both,
            Table::Raw,
            OUTPUT,
            &format!("-j {ISTIO_OUTPUT_DNS}"),
        );
        // Jump only in families that have something to capture.
        if all || !cfg.dns_servers_v4.is_empty() {
            add(
                self,
                Fam::V4,
                Table::Nat,
                ISTIO_OUTPUT,
                &format!("-j {ISTIO_OUTPUT_DNS}"),
            );
        }
        if all || !cfg.dns_servers_v6.is_empty() {
            add(
                self,
                Fam::V6,
                Table::Nat,
                ISTIO_OUTPUT,
                &format!("-j {ISTIO_OUTPUT_DNS}"),
            );
        }
        // istio-iptables spells the UDP option `--to-port`; iptables reads both.
        for (proto, to) in [("tcp", "--to-ports"), ("udp", "--to-port")] {
            if all {
                let spec = format!("-p {proto} --dport 53 -j REDIRECT {to} {agent}");
                add(self, Fam::Both, Table::Nat, ISTIO_OUTPUT_DNS, &spec);
            } else {
                for (fam, server) in &servers {
                    let spec =
                        format!("-p {proto} --dport 53 -d {server} -j REDIRECT {to} {agent}");
                    add(self, *fam, Table::Nat, ISTIO_OUTPUT_DNS, &spec);
                }
            }
        }

        // Conntrack zones: the proxy's upstream queries in zone 1, its answers to apps in zone 2,
        // so the two legs of a redirected UDP query never share a conntrack entry.
        let owners = cfg
            .proxy_uids
            .iter()
            .map(|u| ("--uid-owner", *u))
            .chain(cfg.proxy_gids.iter().map(|g| ("--gid-owner", *g)));
        for (flag, id) in owners {
            let spec = format!("-p udp --dport 53 -m owner {flag} {id} -j CT --zone 1");
            add(self, Fam::Both, Table::Raw, ISTIO_OUTPUT_DNS, &spec);
            let spec = format!("-p udp --sport {agent} -m owner {flag} {id} -j CT --zone 2");
            add(self, Fam::Both, Table::Raw, ISTIO_OUTPUT_DNS, &spec);
        }
        if all {
            add(
                self,
                Fam::Both,
                Table::Raw,
                PREROUTING,
                &format!("-j {ISTIO_INBOUND}"),
            );
            add(
                self,
                Fam::Both,
                Table::Raw,
                ISTIO_OUTPUT_DNS,
                "-p udp --dport 53 -j CT --zone 2",
            );
            add(
                self,
                Fam::Both,
                Table::Raw,
                ISTIO_INBOUND,
                "-p udp --sport 53 -j CT --zone 1",
            );
            return;
        }
        for family in [Fam::V4, Fam::V6] {
            let mine: Vec<&String> = servers
                .iter()
                .filter(|(f, _)| *f == family)
                .map(|(_, s)| s)
                .collect();
            if !mine.is_empty() {
                add(
                    self,
                    family,
                    Table::Raw,
                    PREROUTING,
                    &format!("-j {ISTIO_INBOUND}"),
                );
            }
            for server in mine {
                let spec = format!("-p udp --dport 53 -d {server} -j CT --zone 2");
                add(self, family, Table::Raw, ISTIO_OUTPUT_DNS, &spec);
                let spec = format!("-p udp --sport 53 -s {server} -j CT --zone 1");
                add(self, family, Table::Raw, ISTIO_INBOUND, &spec);
            }
        }
    }
}

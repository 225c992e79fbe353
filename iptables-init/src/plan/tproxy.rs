//! TPROXY mode: the mangle-table `ISTIO_DIVERT`/`ISTIO_TPROXY` chains and the marks that keep
//! the proxy's own traffic to the app out of the inbound capture.

use super::{
    Fam, IP, LOOPBACK_V6, OUTBOUND_MARK, OUTPUT, PASSTHROUGH_V4, PASSTHROUGH_V6, PREROUTING,
    Planner,
};
use crate::rules::{ISTIO_DIVERT, ISTIO_INBOUND, ISTIO_TPROXY, Position, Table};

// === impl Planner ===

impl Planner<'_> {
    /// `ISTIO_DIVERT` marks established inbound packets; `ISTIO_TPROXY` hands new connections
    /// to the inbound capture port without rewriting their destination.
    pub(super) fn tproxy_chains(&mut self) {
        let mark = self.cfg.tproxy_mark;
        let capture = self.cfg.inbound_capture_port;
        let lo = self.lo_v4.clone();
        self.append(
            Table::Mangle,
            ISTIO_DIVERT,
            &format!("-j MARK --set-mark {mark}"),
        );
        self.append(Table::Mangle, ISTIO_DIVERT, "-j ACCEPT");
        let spec = format!(
            "! -d {IP} -p tcp -j TPROXY --tproxy-mark {mark}/0xffffffff --on-port {capture}"
        );
        self.append_versioned(Table::Mangle, ISTIO_TPROXY, &lo, LOOPBACK_V6, &spec);
    }

    /// Per inbound port (`dport` is `--dport N ` or empty for all ports): established packets
    /// are diverted, new ones go to TPROXY.
    pub(super) fn tproxy_inbound(&mut self, dport: &str) {
        let spec =
            format!("-p tcp {dport}-m conntrack --ctstate RELATED,ESTABLISHED -j {ISTIO_DIVERT}");
        self.append(Table::Mangle, ISTIO_INBOUND, &spec);
        self.append(
            Table::Mangle,
            ISTIO_INBOUND,
            &format!("-p tcp {dport}-j {ISTIO_TPROXY}"),
        );
    }

    /// Keep the mark across the connection, mark the proxy's traffic to the app with 1338, and
    /// skip capture for marked and loopback passthrough traffic.
    pub(super) fn tproxy_marks(&mut self) {
        let cfg = self.cfg;
        let mark = cfg.tproxy_mark;
        let lo = self.lo_v4.clone();
        self.append(
            Table::Mangle,
            PREROUTING,
            &format!("-p tcp -m mark --mark {mark} -j CONNMARK --save-mark"),
        );
        self.append(
            Table::Mangle,
            OUTPUT,
            &format!("-p tcp -o lo -m mark --mark {mark} -j RETURN"),
        );
        let owners = cfg
            .proxy_uids
            .iter()
            .map(|u| ("--uid-owner", *u))
            .chain(cfg.proxy_gids.iter().map(|g| ("--gid-owner", *g)));
        for (flag, id) in owners {
            let spec = format!(
                "! -d {IP} -p tcp -o lo -m owner {flag} {id} -j MARK --set-mark {OUTBOUND_MARK}"
            );
            self.append_versioned(Table::Mangle, OUTPUT, &lo, LOOPBACK_V6, &spec);
        }
        self.append(
            Table::Mangle,
            OUTPUT,
            &format!("-p tcp -m connmark --mark {mark} -j CONNMARK --restore-mark"),
        );
        let insert = |p: &mut Self, fam, at, spec: &str| {
            p.add(
                fam,
                Table::Mangle,
                ISTIO_INBOUND,
                Position::Insert(at),
                spec,
            )
        };
        insert(
            self,
            Fam::Both,
            1,
            &format!("-p tcp -m mark --mark {mark} -j RETURN"),
        );
        insert(
            self,
            Fam::V4,
            2,
            &format!("-p tcp -s {PASSTHROUGH_V4} -i lo -j RETURN"),
        );
        insert(
            self,
            Fam::V6,
            2,
            &format!("-p tcp -s {PASSTHROUGH_V6} -i lo -j RETURN"),
        );
        insert(
            self,
            Fam::Both,
            3,
            &format!("-p tcp -i lo -m mark ! --mark {OUTBOUND_MARK} -j RETURN"),
        );
    }
}

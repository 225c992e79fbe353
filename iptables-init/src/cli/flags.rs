//! The flag table: clap's definition of istio-iptables' flags and, per flag, its names and
//! environment variables.

use clap::Parser;

/// istio-iptables' flags. Every value is a string so that "absent" (use the environment or the
/// default) differs from "given, even empty" (`-x ""`), as with Go's pflag.
#[derive(Debug, Parser)]
#[command(
    name = "iptables-init",
    about = "Set up iptables rules for the Skiff sidecar (istio-iptables compatible)",
    args_override_self = true
)]
pub(super) struct Args {
    /// Accepted and ignored when it is "istio-iptables", so pilot-agent argument lists work.
    #[arg(value_name = "istio-iptables", hide = true)]
    pub(super) command: Option<String>,
    /// Port to which all outbound TCP traffic is redirected [env: ENVOY_PORT] [default: 15001].
    #[arg(short = 'p', long = "envoy-port")]
    pub(super) envoy_port: Option<String>,
    /// Port to which inbound TCP traffic is redirected [env: INBOUND_CAPTURE_PORT] [default: 15006].
    #[arg(short = 'z', long = "inbound-capture-port")]
    pub(super) inbound_capture_port: Option<String>,
    /// Tunnel port for inbound TCP, never captured [env: INBOUND_TUNNEL_PORT] [default: 15008].
    #[arg(short = 'e', long = "inbound-tunnel-port")]
    pub(super) inbound_tunnel_port: Option<String>,
    /// UIDs whose traffic is not redirected [env: PROXY_UID] [default: uid of $ENVOY_USER, else 1337].
    #[arg(short = 'u', long = "proxy-uid")]
    pub(super) proxy_uid: Option<String>,
    /// GIDs whose traffic is not redirected [env: PROXY_GID] [default: same as -u].
    #[arg(short = 'g', long = "proxy-gid")]
    pub(super) proxy_gid: Option<String>,
    /// Inbound interception mode: REDIRECT or TPROXY [env: ISTIO_INBOUND_INTERCEPTION_MODE].
    #[arg(short = 'm', long = "istio-inbound-interception-mode")]
    pub(super) mode: Option<String>,
    /// Inbound ports to capture, "*" for all, empty for none [env: ISTIO_INBOUND_PORTS].
    #[arg(short = 'b', long = "istio-inbound-ports")]
    pub(super) inbound_ports: Option<String>,
    /// Inbound ports never captured when -b is "*" [env: ISTIO_LOCAL_EXCLUDE_PORTS].
    #[arg(short = 'd', long = "istio-local-exclude-ports")]
    pub(super) local_exclude_ports: Option<String>,
    /// Interfaces never captured in either direction [env: ISTIO_EXCLUDE_INTERFACES].
    #[arg(short = 'c', long = "istio-exclude-interfaces")]
    pub(super) exclude_interfaces: Option<String>,
    /// Outbound CIDRs to capture, "*" for all, empty for none [env: ISTIO_SERVICE_CIDR].
    #[arg(short = 'i', long = "istio-service-cidr")]
    pub(super) service_cidr: Option<String>,
    /// Outbound CIDRs never captured [env: ISTIO_SERVICE_EXCLUDE_CIDR].
    #[arg(short = 'x', long = "istio-service-exclude-cidr")]
    pub(super) service_exclude_cidr: Option<String>,
    /// Outbound ports always captured [env: ISTIO_OUTBOUND_PORTS].
    #[arg(short = 'q', long = "istio-outbound-ports")]
    pub(super) outbound_ports: Option<String>,
    /// Outbound ports never captured [env: ISTIO_LOCAL_OUTBOUND_PORTS_EXCLUDE].
    #[arg(short = 'o', long = "istio-local-outbound-ports-exclude")]
    pub(super) local_outbound_ports_exclude: Option<String>,
    /// Interfaces whose inbound traffic is treated as outbound [env: KUBE_VIRT_INTERFACES].
    #[arg(short = 'k', long = "kube-virt-interfaces")]
    pub(super) kube_virt_interfaces: Option<String>,
    /// TPROXY mark [env: ISTIO_INBOUND_TPROXY_MARK] [default: 1337].
    #[arg(short = 't', long = "istio-inbound-tproxy-mark")]
    pub(super) tproxy_mark: Option<String>,
    /// TPROXY routing table [env: ISTIO_INBOUND_TPROXY_ROUTE_TABLE] [default: 133].
    #[arg(short = 'r', long = "istio-inbound-tproxy-route-table")]
    pub(super) tproxy_route_table: Option<String>,
    /// Print the rules and change nothing [env: DRY_RUN].
    #[arg(short = 'n', long = "dry-run", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub(super) dry_run: Option<String>,
    /// Do not program rules (with --run-validation under Istio CNI) [env: SKIP_RULE_APPLY].
    #[arg(long = "skip-rule-apply", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub(super) skip_rule_apply: Option<String>,
    /// Check that redirection works; exit 126 if not [env: RUN_VALIDATION].
    #[arg(long = "run-validation", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub(super) run_validation: Option<String>,
    /// Port the validation probe connects to [env: IPTABLES_PROBE_PORT] [default: 15002].
    #[arg(long = "iptables-probe-port")]
    pub(super) iptables_probe_port: Option<String>,
    /// How long validation waits, Go syntax [env: PROBE_TIMEOUT] [default: 5s].
    #[arg(long = "probe-timeout")]
    pub(super) probe_timeout: Option<String>,
    /// Capture DNS to istio-agent on 15053 [env: REDIRECT_DNS, ISTIO_META_DNS_CAPTURE].
    #[arg(long = "redirect-dns", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub(super) redirect_dns: Option<String>,
    /// Drop conntrack-INVALID packets [env: DROP_INVALID, INVALID_DROP].
    #[arg(long = "drop-invalid", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub(super) drop_invalid: Option<String>,
    /// Program ip6tables if the pod has any IPv6 address [env: DUAL_STACK, ISTIO_DUAL_STACK].
    #[arg(long = "dual-stack", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub(super) dual_stack: Option<String>,
    /// Capture all port-53 traffic, not only to resolv.conf servers [env: CAPTURE_ALL_DNS].
    #[arg(long = "capture-all-dns", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub(super) capture_all_dns: Option<String>,
    /// Network namespace (a path like /var/run/netns/x) to program [env: NETWORK_NAMESPACE].
    #[arg(long = "network-namespace")]
    pub(super) network_namespace: Option<String>,
    /// Replace existing Skiff chains that differ from the plan [env: RECONCILE].
    #[arg(long = "reconcile", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub(super) reconcile: Option<String>,
    /// Only remove Skiff's chains and jumps [env: CLEANUP_ONLY].
    #[arg(long = "cleanup-only", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub(super) cleanup_only: Option<String>,
    /// Apply without checking the current tables [env: FORCE_APPLY].
    #[arg(long = "force-apply", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub(super) force_apply: Option<String>,
    /// Not supported (istio-cni only) [env: CNI_MODE].
    #[arg(long = "cni-mode", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub(super) cni_mode: Option<String>,
    /// Not supported (native nftables rules) [env: NATIVE_NFTABLES].
    #[arg(long = "native-nftables", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub(super) native_nftables: Option<String>,
    /// Not supported (NFLOG trace rules) [env: IPTABLES_TRACE_LOGGING].
    #[arg(long = "iptables-trace-logging", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub(super) trace_logging: Option<String>,
    /// Istio log scopes, e.g. default:info; only the level is used.
    #[arg(long = "log_output_level")]
    pub(super) log_output_level: Option<String>,
    /// Accepted; logs stay plain text.
    #[arg(long = "log_as_json", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub(super) log_as_json: Option<String>,
}

/// A flag's names, for lookups and error messages.
pub(super) struct Flag {
    pub(super) short: Option<char>,
    pub(super) long: &'static str,
    /// Variables read when the flag is absent, in increasing precedence (the last one set wins,
    /// as istio's `flag.AdditionalEnv` is applied after `flag.BindEnv`).
    pub(super) env: &'static [&'static str],
}

macro_rules! flag {
    ($short:expr, $long:literal, [$($env:literal),*]) => {
        Flag { short: $short, long: $long, env: &[$($env),*] }
    };
}

pub(super) const ENVOY_PORT: Flag = flag!(Some('p'), "envoy-port", ["ENVOY_PORT"]);
pub(super) const CAPTURE_PORT: Flag =
    flag!(Some('z'), "inbound-capture-port", ["INBOUND_CAPTURE_PORT"]);
pub(super) const TUNNEL_PORT: Flag =
    flag!(Some('e'), "inbound-tunnel-port", ["INBOUND_TUNNEL_PORT"]);
pub(super) const PROXY_UID: Flag = flag!(Some('u'), "proxy-uid", ["PROXY_UID"]);
pub(super) const PROXY_GID: Flag = flag!(Some('g'), "proxy-gid", ["PROXY_GID"]);
pub(super) const MODE: Flag = flag!(
    Some('m'),
    "istio-inbound-interception-mode",
    ["ISTIO_INBOUND_INTERCEPTION_MODE"]
);
pub(super) const INBOUND_PORTS: Flag =
    flag!(Some('b'), "istio-inbound-ports", ["ISTIO_INBOUND_PORTS"]);
pub(super) const EXCLUDE_PORTS: Flag = flag!(
    Some('d'),
    "istio-local-exclude-ports",
    ["ISTIO_LOCAL_EXCLUDE_PORTS"]
);
pub(super) const EXCLUDE_IFACES: Flag = flag!(
    Some('c'),
    "istio-exclude-interfaces",
    ["ISTIO_EXCLUDE_INTERFACES"]
);
pub(super) const SERVICE_CIDR: Flag =
    flag!(Some('i'), "istio-service-cidr", ["ISTIO_SERVICE_CIDR"]);
pub(super) const EXCLUDE_CIDR: Flag = flag!(
    Some('x'),
    "istio-service-exclude-cidr",
    ["ISTIO_SERVICE_EXCLUDE_CIDR"]
);
pub(super) const OUTBOUND_PORTS: Flag =
    flag!(Some('q'), "istio-outbound-ports", ["ISTIO_OUTBOUND_PORTS"]);
pub(super) const OUTBOUND_EXCLUDE: Flag = flag!(
    Some('o'),
    "istio-local-outbound-ports-exclude",
    ["ISTIO_LOCAL_OUTBOUND_PORTS_EXCLUDE"]
);
pub(super) const KUBE_VIRT: Flag =
    flag!(Some('k'), "kube-virt-interfaces", ["KUBE_VIRT_INTERFACES"]);
pub(super) const TPROXY_MARK: Flag = flag!(
    Some('t'),
    "istio-inbound-tproxy-mark",
    ["ISTIO_INBOUND_TPROXY_MARK"]
);
pub(super) const TPROXY_TABLE: Flag = flag!(
    Some('r'),
    "istio-inbound-tproxy-route-table",
    ["ISTIO_INBOUND_TPROXY_ROUTE_TABLE"]
);
pub(super) const DRY_RUN: Flag = flag!(Some('n'), "dry-run", ["DRY_RUN"]);
pub(super) const SKIP_RULE_APPLY: Flag = flag!(None, "skip-rule-apply", ["SKIP_RULE_APPLY"]);
pub(super) const RUN_VALIDATION: Flag = flag!(None, "run-validation", ["RUN_VALIDATION"]);
pub(super) const PROBE_PORT: Flag = flag!(None, "iptables-probe-port", ["IPTABLES_PROBE_PORT"]);
pub(super) const PROBE_TIMEOUT: Flag = flag!(None, "probe-timeout", ["PROBE_TIMEOUT"]);
pub(super) const REDIRECT_DNS: Flag = flag!(
    None,
    "redirect-dns",
    ["REDIRECT_DNS", "ISTIO_META_DNS_CAPTURE"]
);
pub(super) const DROP_INVALID: Flag = flag!(None, "drop-invalid", ["DROP_INVALID", "INVALID_DROP"]);
pub(super) const DUAL_STACK: Flag = flag!(None, "dual-stack", ["DUAL_STACK", "ISTIO_DUAL_STACK"]);
pub(super) const CAPTURE_ALL_DNS: Flag = flag!(None, "capture-all-dns", ["CAPTURE_ALL_DNS"]);
pub(super) const NETWORK_NAMESPACE: Flag = flag!(None, "network-namespace", ["NETWORK_NAMESPACE"]);
pub(super) const RECONCILE: Flag = flag!(None, "reconcile", ["RECONCILE"]);
pub(super) const CLEANUP_ONLY: Flag = flag!(None, "cleanup-only", ["CLEANUP_ONLY"]);
pub(super) const FORCE_APPLY: Flag = flag!(None, "force-apply", ["FORCE_APPLY"]);
pub(super) const CNI_MODE: Flag = flag!(None, "cni-mode", ["CNI_MODE"]);
pub(super) const NATIVE_NFTABLES: Flag = flag!(None, "native-nftables", ["NATIVE_NFTABLES"]);
pub(super) const TRACE_LOGGING: Flag =
    flag!(None, "iptables-trace-logging", ["IPTABLES_TRACE_LOGGING"]);
pub(super) const LOG_AS_JSON: Flag = flag!(None, "log_as_json", []);
pub(super) const LOG_LEVEL: Flag = flag!(None, "log_output_level", []);

// === impl Flag ===

impl Flag {
    pub(super) fn name(&self) -> String {
        match self.short {
            Some(s) => format!("-{s}/--{}", self.long),
            None => format!("--{}", self.long),
        }
    }
}

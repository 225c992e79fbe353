//! The node identity istiod expects from a sidecar: `node.id`, `node.cluster` and the metadata
//! Struct, built from a plain config struct.
//!
//! Sources (istio/istio):
//! - `pkg/model/proxy.go`, `NodeMetadata` and `BootstrapNodeMetadata`: the JSON names of the
//!   metadata fields istiod reads. `INSTANCE_IPS` is a `StringList`, sent as one comma-separated
//!   string; `LABELS` and `ANNOTATIONS` are string maps; fields are `omitempty`, so empty ones are
//!   left out here too.
//! - `pilot/pkg/model/context.go`, `ParseServiceNodeWithMetadata`: `node.id` has four
//!   `~`-separated parts, type, IP, ID (`POD.NS`) and DNS domain (`NS.svc.cluster.local`); the
//!   IPs in `INSTANCE_IPS` take precedence over the one in the ID.
//! - `pkg/bootstrap/config.go`, `serviceClusterOrDefault`: `node.cluster` is `APP.NS` from the
//!   `app` label, else `WORKLOAD_NAME.NS`, else `istio-proxy.NS`.

use std::{collections::BTreeMap, net::IpAddr};

use envoy_types::pb::{
    envoy::config::core::v3::{Node, node::UserAgentVersionType},
    google::protobuf::{Struct, Value, value::Kind},
};

/// What a sidecar says about itself to istiod. Empty strings and maps are left out of the
/// metadata, as istiod's own `omitempty` does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeIdentity {
    /// The pod's IP, the second part of `node.id`.
    pub ip: IpAddr,
    /// The pod's name (`NAME`, and the first half of the ID part of `node.id`).
    pub pod_name: String,
    /// The pod's namespace (`NAMESPACE`).
    pub namespace: String,
    /// The cluster's DNS domain, `cluster.local` unless the cluster was set up otherwise.
    pub dns_domain: String,
    /// Every IP of the pod (`INSTANCE_IPS`); `[ip]` when empty.
    pub instance_ips: Vec<IpAddr>,
    /// The workload's service account (`SERVICE_ACCOUNT`).
    pub service_account: String,
    /// The cluster the pod runs in, as istiod knows it (`CLUSTER_ID`; Istio's default is
    /// `Kubernetes`).
    pub cluster_id: String,
    /// The mesh (`MESH_ID`).
    pub mesh_id: String,
    /// The network the pod is on (`NETWORK`).
    pub network: String,
    /// The pod's labels (`LABELS`).
    pub labels: BTreeMap<String, String>,
    /// The pod's annotations (`ANNOTATIONS`).
    pub annotations: BTreeMap<String, String>,
    /// The Istio version the proxy claims to be compatible with (`ISTIO_VERSION`); istiod
    /// generates config for that version.
    pub istio_version: String,
    /// The workload, e.g. the Deployment's name (`WORKLOAD_NAME`).
    pub workload_name: String,
    /// The workload's owner reference (`OWNER`).
    pub owner: String,
    /// The Kubernetes node the pod runs on (`NODE_NAME`).
    pub node_name: String,
    /// How traffic reaches the proxy (`INTERCEPTION_MODE`): `REDIRECT` or `TPROXY`.
    pub interception_mode: String,
    /// `node.cluster`, when it must not be derived from the labels.
    pub service_cluster: Option<String>,
    /// More string metadata, as Istio's `ISTIO_META_*` variables add. The fields above win over
    /// an entry here with the same key.
    pub extra: BTreeMap<String, String>,
}

// === impl NodeIdentity ===

impl NodeIdentity {
    /// The identity of pod `pod_name` in `namespace` at `ip`, with Istio's defaults:
    /// `cluster.local`, cluster `Kubernetes`, interception `REDIRECT`, everything else empty.
    pub fn new(ip: IpAddr, pod_name: impl Into<String>, namespace: impl Into<String>) -> Self {
        Self {
            ip,
            pod_name: pod_name.into(),
            namespace: namespace.into(),
            dns_domain: "cluster.local".to_string(),
            instance_ips: Vec::new(),
            service_account: String::new(),
            cluster_id: "Kubernetes".to_string(),
            mesh_id: String::new(),
            network: String::new(),
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
            istio_version: String::new(),
            workload_name: String::new(),
            owner: String::new(),
            node_name: String::new(),
            interception_mode: "REDIRECT".to_string(),
            service_cluster: None,
            extra: BTreeMap::new(),
        }
    }

    /// `sidecar~IP~POD.NS~NS.svc.DOMAIN`.
    pub fn node_id(&self) -> String {
        let ns = &self.namespace;
        format!(
            "sidecar~{}~{}.{ns}~{ns}.svc.{}",
            self.ip, self.pod_name, self.dns_domain
        )
    }

    /// `node.cluster`: [`service_cluster`](Self::service_cluster) if set, else Istio's
    /// derivation from the `app` label or the workload name.
    pub fn service_cluster(&self) -> String {
        if let Some(cluster) = &self.service_cluster {
            return cluster.clone();
        }
        let ns = &self.namespace;
        match (self.labels.get("app"), self.workload_name.as_str()) {
            (Some(app), _) => format!("{app}.{ns}"),
            (None, "") => format!("istio-proxy.{ns}"),
            (None, workload) => format!("{workload}.{ns}"),
        }
    }

    /// The metadata Struct istiod parses into its `NodeMetadata`.
    pub fn metadata(&self) -> Struct {
        let mut fields: BTreeMap<String, Value> = self
            .extra
            .iter()
            .map(|(k, v)| (k.clone(), string(v)))
            .collect();
        let ips = if self.instance_ips.is_empty() {
            self.ip.to_string()
        } else {
            let ips: Vec<String> = self.instance_ips.iter().map(IpAddr::to_string).collect();
            ips.join(",")
        };
        let strings = [
            ("NAME", self.pod_name.as_str()),
            ("NAMESPACE", &self.namespace),
            ("INSTANCE_IPS", &ips),
            ("SERVICE_ACCOUNT", &self.service_account),
            ("CLUSTER_ID", &self.cluster_id),
            ("MESH_ID", &self.mesh_id),
            ("NETWORK", &self.network),
            ("ISTIO_VERSION", &self.istio_version),
            ("WORKLOAD_NAME", &self.workload_name),
            ("OWNER", &self.owner),
            ("NODE_NAME", &self.node_name),
            ("INTERCEPTION_MODE", &self.interception_mode),
        ];
        for (key, value) in strings.into_iter().filter(|(_, v)| !v.is_empty()) {
            fields.insert(key.to_string(), string(value));
        }
        for (key, map) in [("LABELS", &self.labels), ("ANNOTATIONS", &self.annotations)] {
            if !map.is_empty() {
                fields.insert(key.to_string(), string_map(map));
            }
        }
        Struct {
            fields: fields.into_iter().collect(),
        }
    }

    /// The `Node` for the first request of each stream.
    pub fn to_node(&self) -> Node {
        Node {
            id: self.node_id(),
            cluster: self.service_cluster(),
            metadata: Some(self.metadata()),
            user_agent_name: "skiff".to_string(),
            user_agent_version_type: Some(UserAgentVersionType::UserAgentVersion(
                env!("CARGO_PKG_VERSION").to_string(),
            )),
            ..Default::default()
        }
    }
}

fn string(value: &str) -> Value {
    Value {
        kind: Some(Kind::StringValue(value.to_string())),
    }
}

fn string_map(map: &BTreeMap<String, String>) -> Value {
    let fields = map.iter().map(|(k, v)| (k.clone(), string(v))).collect();
    Value {
        kind: Some(Kind::StructValue(Struct { fields })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &Struct, key: &str) -> Option<String> {
        match s.fields.get(key)?.kind.as_ref()? {
            Kind::StringValue(v) => Some(v.clone()),
            _ => None,
        }
    }

    fn productpage() -> NodeIdentity {
        let mut id = NodeIdentity::new([10, 1, 2, 3].into(), "productpage-v1-7d9f", "bookinfo");
        id.service_account = "bookinfo-productpage".to_string();
        id.istio_version = "1.24.0".to_string();
        id.labels
            .insert("app".to_string(), "productpage".to_string());
        id.labels.insert("version".to_string(), "v1".to_string());
        id
    }

    #[test]
    fn node_id_has_istio_sidecar_shape() {
        assert_eq!(
            productpage().node_id(),
            "sidecar~10.1.2.3~productpage-v1-7d9f.bookinfo~bookinfo.svc.cluster.local"
        );
    }

    #[test]
    fn node_cluster_follows_app_label_then_workload() {
        let mut id = productpage();
        assert_eq!(id.service_cluster(), "productpage.bookinfo");
        id.labels.clear();
        id.workload_name = "productpage-v1".to_string();
        assert_eq!(id.service_cluster(), "productpage-v1.bookinfo");
        id.workload_name.clear();
        assert_eq!(id.service_cluster(), "istio-proxy.bookinfo");
    }

    #[test]
    fn metadata_carries_the_fields_istiod_reads() {
        let mut id = productpage();
        id.instance_ips = vec![[10, 1, 2, 3].into(), "fd00::3".parse().expect("an IPv6")];
        let meta = id.metadata();
        assert_eq!(text(&meta, "NAMESPACE").as_deref(), Some("bookinfo"));
        assert_eq!(
            text(&meta, "SERVICE_ACCOUNT").as_deref(),
            Some("bookinfo-productpage")
        );
        assert_eq!(
            text(&meta, "INSTANCE_IPS").as_deref(),
            Some("10.1.2.3,fd00::3")
        );
        assert_eq!(text(&meta, "CLUSTER_ID").as_deref(), Some("Kubernetes"));
        assert_eq!(text(&meta, "ISTIO_VERSION").as_deref(), Some("1.24.0"));
        assert_eq!(
            text(&meta, "INTERCEPTION_MODE").as_deref(),
            Some("REDIRECT")
        );
        let Some(Kind::StructValue(labels)) = meta.fields["LABELS"].kind.as_ref() else {
            panic!("LABELS is not a Struct: {:?}", meta.fields["LABELS"]);
        };
        assert_eq!(text(labels, "version").as_deref(), Some("v1"));
        // Empty fields are left out, as istiod's `omitempty`.
        assert!(!meta.fields.contains_key("MESH_ID"));
        assert!(!meta.fields.contains_key("ANNOTATIONS"));
    }

    #[test]
    fn instance_ips_default_to_the_node_ip_and_typed_fields_beat_extra() {
        let mut id = productpage();
        id.extra
            .insert("NAMESPACE".to_string(), "spoofed".to_string());
        id.extra
            .insert("DNS_CAPTURE".to_string(), "true".to_string());
        let node = id.to_node();
        let meta = node.metadata.expect("metadata is set");
        assert_eq!(text(&meta, "INSTANCE_IPS").as_deref(), Some("10.1.2.3"));
        assert_eq!(text(&meta, "NAMESPACE").as_deref(), Some("bookinfo"));
        assert_eq!(text(&meta, "DNS_CAPTURE").as_deref(), Some("true"));
        assert_eq!(node.cluster, "productpage.bookinfo");
    }
}

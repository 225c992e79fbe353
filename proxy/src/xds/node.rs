//! The node identity from the pod's environment, as Istio's sidecar injector sets it (for a
//! bootstrap that does not carry one, for example when no pilot-agent wrote it).
//!
//! Variables (names as the injected `istio-proxy` container has them):
//! - required: `POD_NAME`, `POD_NAMESPACE`, `INSTANCE_IP`;
//! - optional: `SERVICE_ACCOUNT`, `NODE_NAME`, `ISTIO_META_CLUSTER_ID` (default `Kubernetes`),
//!   `ISTIO_META_MESH_ID`, `ISTIO_META_NETWORK`, `ISTIO_META_WORKLOAD_NAME`,
//!   `ISTIO_META_OWNER`, `ISTIO_META_INTERCEPTION_MODE`, `ISTIO_META_DNS_DOMAIN` (default
//!   `cluster.local`), `ISTIO_VERSION`, `ISTIO_META_LABELS` (JSON object), `SERVICE_CLUSTER`;
//! - every other `ISTIO_META_<KEY>` becomes metadata `<KEY>`, as pilot-agent does.

use std::{collections::BTreeMap, net::IpAddr};

use envoy_types::pb::envoy::config::core::v3::Node;
use xds_client::NodeIdentity;

/// Why no node identity could be built.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// A variable the identity needs is not set.
    #[error(
        "the control plane needs a node id: set node.id in the bootstrap (or --service-node), \
         or the environment variable {0}"
    )]
    Missing(&'static str),
    /// A variable has a value that cannot be used.
    #[error("environment variable {name}: {problem}")]
    Invalid {
        /// The variable.
        name: &'static str,
        /// What is wrong with it.
        problem: String,
    },
}

/// Builds the node from variables read through `get`.
pub fn node_from_env(get: impl Fn(&str) -> Option<String>) -> Result<Node, NodeError> {
    let need = |name: &'static str| {
        get(name)
            .filter(|v| !v.is_empty())
            .ok_or(NodeError::Missing(name))
    };
    let pod = need("POD_NAME")?;
    let namespace = need("POD_NAMESPACE")?;
    let ip_text = need("INSTANCE_IP")?;
    let ip: IpAddr = ip_text.parse().map_err(|_| NodeError::Invalid {
        name: "INSTANCE_IP",
        problem: format!("'{ip_text}' is not an IP address"),
    })?;
    let mut id = NodeIdentity::new(ip, pod, namespace);
    let opt = |name: &str| get(name).filter(|v| !v.is_empty());
    if let Some(v) = opt("SERVICE_ACCOUNT") {
        id.service_account = v;
    }
    if let Some(v) = opt("NODE_NAME") {
        id.node_name = v;
    }
    if let Some(v) = opt("ISTIO_META_CLUSTER_ID") {
        id.cluster_id = v;
    }
    if let Some(v) = opt("ISTIO_META_MESH_ID") {
        id.mesh_id = v;
    }
    if let Some(v) = opt("ISTIO_META_NETWORK") {
        id.network = v;
    }
    if let Some(v) = opt("ISTIO_META_WORKLOAD_NAME") {
        id.workload_name = v;
    }
    if let Some(v) = opt("ISTIO_META_OWNER") {
        id.owner = v;
    }
    if let Some(v) = opt("ISTIO_META_INTERCEPTION_MODE") {
        id.interception_mode = v;
    }
    if let Some(v) = opt("ISTIO_META_DNS_DOMAIN") {
        id.dns_domain = v;
    }
    if let Some(v) = opt("ISTIO_VERSION") {
        id.istio_version = v;
    }
    if let Some(v) = opt("SERVICE_CLUSTER") {
        id.service_cluster = Some(v);
    }
    if let Some(v) = opt("ISTIO_META_LABELS") {
        id.labels = serde_json::from_str::<BTreeMap<String, String>>(&v).map_err(|e| {
            NodeError::Invalid {
                name: "ISTIO_META_LABELS",
                problem: format!("not a JSON object of strings: {e}"),
            }
        })?;
    }
    const TYPED: &[&str] = &[
        "CLUSTER_ID",
        "MESH_ID",
        "NETWORK",
        "WORKLOAD_NAME",
        "OWNER",
        "INTERCEPTION_MODE",
        "DNS_DOMAIN",
        "LABELS",
    ];
    for (key, value) in std::env::vars() {
        if let Some(meta) = key.strip_prefix("ISTIO_META_")
            && !TYPED.contains(&meta)
            && get(&key).is_some()
        {
            id.extra.insert(meta.to_string(), value);
        }
    }
    Ok(id.to_node())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            vars.iter()
                .find(|(name, _)| *name == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn istio_sidecar_id_from_injected_variables() {
        let node = node_from_env(env(&[
            ("POD_NAME", "web-0"),
            ("POD_NAMESPACE", "shop"),
            ("INSTANCE_IP", "10.1.2.3"),
            ("SERVICE_ACCOUNT", "web"),
            ("ISTIO_META_CLUSTER_ID", "east"),
            ("ISTIO_META_LABELS", r#"{"app":"web","version":"v1"}"#),
        ]))
        .unwrap();
        assert_eq!(
            node.id,
            "sidecar~10.1.2.3~web-0.shop~shop.svc.cluster.local"
        );
        assert_eq!(node.cluster, "web.shop");
        let meta = node.metadata.unwrap().fields;
        let s = |k: &str| match &meta[k].kind {
            Some(envoy_types::pb::google::protobuf::value::Kind::StringValue(s)) => s.clone(),
            other => panic!("{k}: {other:?}"),
        };
        assert_eq!(s("CLUSTER_ID"), "east");
        assert_eq!(s("SERVICE_ACCOUNT"), "web");
        assert_eq!(s("NAMESPACE"), "shop");
        assert_eq!(s("INSTANCE_IPS"), "10.1.2.3");
    }

    #[test]
    fn missing_and_bad_variables_are_named() {
        let e = node_from_env(env(&[("POD_NAME", "a")])).unwrap_err();
        assert!(e.to_string().contains("POD_NAMESPACE"), "{e}");
        let e = node_from_env(env(&[
            ("POD_NAME", "a"),
            ("POD_NAMESPACE", "b"),
            ("INSTANCE_IP", "nope"),
        ]))
        .unwrap_err();
        assert!(e.to_string().contains("'nope' is not an IP"), "{e}");
    }
}

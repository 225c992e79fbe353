//! The Envoy API schema at run time: proto3 JSON/YAML in and out, with `Any` resolved by `@type`.
//!
//! Only configuration loading and the admin config dump use this; the data path never does. The
//! pool is built on demand and dropped afterwards because it costs a few MB of memory.

use prost::Message;
use prost_reflect::{DescriptorPool, DeserializeOptions, DynamicMessage, SerializeOptions};

use super::error::{ConfigError, Path};

/// The Envoy v3 API descriptors (extensions included), extracted by `build.rs` from the
/// `envoy-types` crate that the typed structs are generated from.
static DESCRIPTORS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/envoy_descriptor_set.bin"));

/// The text format of a configuration document.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// YAML (a superset of JSON for configuration purposes).
    Yaml,
    /// Strict JSON.
    Json,
}

/// A loaded descriptor pool for the Envoy API.
#[derive(Debug)]
pub struct Schema {
    pool: DescriptorPool,
}

// === impl Format ===

impl Format {
    /// The format Envoy would pick for a file name: `.json` is JSON, everything else YAML.
    pub fn for_path(path: &std::path::Path) -> Self {
        match path.extension().and_then(|e| e.to_str()) {
            Some(ext) if ext.eq_ignore_ascii_case("json") => Self::Json,
            _ => Self::Yaml,
        }
    }
}

// === impl Schema ===

impl Schema {
    /// Decodes the embedded descriptor set.
    pub fn load() -> Self {
        let pool = DescriptorPool::decode(DESCRIPTORS)
            .expect("the descriptor set embedded at build time is valid");
        Self { pool }
    }

    /// Parses `text` as the proto3 JSON mapping of message `T` and returns it as the typed
    /// (prost) message. Errors name the path of the offending field.
    pub fn parse<T: Message + prost::Name + Default>(
        &self,
        text: &str,
        format: Format,
    ) -> Result<T, ConfigError> {
        let value: serde_json::Value = match format {
            Format::Json => serde_json::from_str(text)
                .map_err(|e| ConfigError::new(&Path::root(), format!("invalid JSON: {e}")))?,
            Format::Yaml => serde_yaml_ng::from_str(text)
                .map_err(|e| ConfigError::new(&Path::root(), format!("invalid YAML: {e}")))?,
        };
        if value.is_null() {
            return Err(ConfigError::new(&Path::root(), "the document is empty"));
        }
        let desc = self
            .pool
            .get_message_by_name(&T::full_name())
            .unwrap_or_else(|| panic!("{} is in the Envoy descriptor set", T::full_name()));
        let options = DeserializeOptions::new().deny_unknown_fields(true);
        let dynamic = {
            let mut track = serde_path_to_error::Track::new();
            let de = serde_path_to_error::Deserializer::new(value, &mut track);
            DynamicMessage::deserialize_with_options(desc, de, &options).map_err(|e| {
                let path = track.path().to_string();
                let mut path = if path == "." {
                    Path::root()
                } else {
                    Path::named(path)
                };
                let (problem, unknown) = describe_json_error(&e.to_string());
                if let Some(field) = unknown {
                    path = path.field(&field);
                }
                ConfigError::new(&path, problem)
            })?
        };
        let bytes = dynamic.encode_to_vec();
        T::decode(bytes.as_slice()).map_err(|e| {
            ConfigError::new(
                &Path::root(),
                format!("could not re-encode as {}: {e}", T::full_name()),
            )
        })
    }

    /// Renders a protobuf-encoded message of type `full_name` as pretty proto3 JSON, with `Any`
    /// expanded and field names as in the `.proto` files (as Envoy's admin does).
    pub fn to_json(&self, full_name: &str, bytes: &[u8]) -> Result<String, String> {
        let desc = self
            .pool
            .get_message_by_name(full_name)
            .ok_or_else(|| format!("unknown message type {full_name}"))?;
        let msg = DynamicMessage::decode(desc, bytes).map_err(|e| e.to_string())?;
        let options = SerializeOptions::new()
            .use_proto_field_name(true)
            .stringify_64_bit_integers(true);
        let mut out = Vec::new();
        let mut ser = serde_json::Serializer::with_formatter(
            &mut out,
            serde_json::ser::PrettyFormatter::with_indent(b" "),
        );
        msg.serialize_with_options(&mut ser, &options)
            .map_err(|e| e.to_string())?;
        String::from_utf8(out).map_err(|e| e.to_string())
    }
}

/// Rewords the proto3 JSON mapping's errors for the common cases an operator hits. For an
/// unknown field, also returns its name so the error path can end at it.
fn describe_json_error(raw: &str) -> (String, Option<String>) {
    if let Some(rest) = raw.strip_prefix("unrecognized field name ") {
        let name = rest
            .trim_matches(|c| c == '\'' || c == '"' || c == '`')
            .to_string();
        return ("unknown field".to_string(), Some(name));
    }
    if raw.contains("failed to parse duration") {
        return (
            format!(
                "{raw}: write durations in seconds with an 's' suffix, such as \"0.25s\" or \"5s\""
            ),
            None,
        );
    }
    if raw.starts_with("message '") && raw.ends_with("not found") {
        return (
            format!("{raw}: this @type is not one Skiff supports (or not a known type at all)"),
            None,
        );
    }
    (raw.to_string(), None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::config::bootstrap::v3::Bootstrap;

    #[test]
    fn yaml_with_any_resolves_the_type_url() {
        let schema = Schema::load();
        let text = r#"
static_resources:
  listeners:
  - name: l
    filter_chains:
    - filters:
      - name: tcp
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: s
          cluster: c
"#;
        let b: Bootstrap = schema.parse(text, Format::Yaml).unwrap();
        let l = &b.static_resources.unwrap().listeners[0];
        let filter = &l.filter_chains[0].filters[0];
        let Some(envoy_types::pb::envoy::config::listener::v3::filter::ConfigType::TypedConfig(
            any,
        )) = &filter.config_type
        else {
            panic!("typed_config is kept")
        };
        assert!(any.type_url.ends_with("tcp_proxy.v3.TcpProxy"));
    }

    #[test]
    fn unknown_field_error_names_its_path() {
        let schema = Schema::load();
        let text = "static_resources:\n  listeners:\n  - name: l\n    colour: blue\n";
        let err = schema.parse::<Bootstrap>(text, Format::Yaml).unwrap_err();
        assert_eq!(err.path.as_str(), "static_resources.listeners[0].colour");
        assert!(err.problem.contains("unknown field"), "{}", err.problem);
    }

    #[test]
    fn unknown_type_url_is_rejected_with_its_path() {
        let schema = Schema::load();
        let text = r#"
static_resources:
  listeners:
  - filter_chains:
    - filters:
      - typed_config: {"@type": "type.googleapis.com/acme.Nope", x: 1}
"#;
        let err = schema.parse::<Bootstrap>(text, Format::Yaml).unwrap_err();
        assert!(
            err.path.as_str().starts_with(
                "static_resources.listeners[0].filter_chains[0].filters[0].typed_config"
            ),
            "{err}"
        );
        assert!(err.problem.contains("acme.Nope"), "{err}");
    }

    #[test]
    fn schema_knows_every_accepted_type() {
        use envoy_types::pb::envoy::{
            admin::v3::{ConfigDump, Listeners},
            extensions::filters::{
                listener::{
                    http_inspector::v3::HttpInspector, original_dst::v3::OriginalDst,
                    tls_inspector::v3::TlsInspector,
                },
                network::tcp_proxy::v3::TcpProxy,
            },
        };
        use prost::Name;
        let schema = Schema::load();
        for name in [
            Bootstrap::full_name(),
            ConfigDump::full_name(),
            Listeners::full_name(),
            TcpProxy::full_name(),
            OriginalDst::full_name(),
            TlsInspector::full_name(),
            HttpInspector::full_name(),
            "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
                .to_string(),
            "envoy.extensions.filters.http.router.v3.Router".to_string(),
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions".to_string(),
            // What /config_dump wraps.
            "envoy.admin.v3.BootstrapConfigDump".to_string(),
            "envoy.admin.v3.ListenersConfigDump".to_string(),
            "envoy.admin.v3.ClustersConfigDump".to_string(),
        ] {
            assert!(
                schema.pool.get_message_by_name(&name).is_some(),
                "{name} missing"
            );
        }
    }

    #[test]
    fn config_dump_json_round_trips() {
        let schema = Schema::load();
        let b: Bootstrap = schema
            .parse("node: {id: n1, cluster: c1}", Format::Yaml)
            .unwrap();
        let json = schema
            .to_json("envoy.config.bootstrap.v3.Bootstrap", &b.encode_to_vec())
            .unwrap();
        let again: Bootstrap = schema.parse(&json, Format::Json).unwrap();
        assert_eq!(b, again);
    }
}

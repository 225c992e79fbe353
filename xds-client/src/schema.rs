//! The xDS schema at run time (feature `schema`): proto3 JSON/YAML in and out, with `Any`
//! resolved by `@type`, for every Envoy message Skiff reads and the Istio extension configs that
//! istiod sends inside them.
//!
//! Only configuration loading, the test xDS server and the admin config dump use this; a data
//! path never should. Decoding the pool costs a few MB, so callers build it when they need it
//! and drop it afterwards.

use std::fmt;

use prost::Message;
use prost_reflect::{DescriptorPool, DeserializeOptions, DynamicMessage, SerializeOptions};

/// The descriptors: the Envoy API files Skiff reads (from the `envoy-types` crate that the typed
/// structs are generated from) and the protos in `proto/`, assembled by `build.rs`.
static DESCRIPTORS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/envoy_descriptor_set.bin"));

/// The text format of a document.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// YAML (a superset of JSON for configuration purposes).
    Yaml,
    /// Strict JSON.
    Json,
}

/// A loaded descriptor pool.
#[derive(Debug)]
pub struct Schema {
    pool: DescriptorPool,
}

/// Why a document could not be read as a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    /// Where, as `a.b[2].c`; empty for the document itself.
    pub path: String,
    /// What is wrong there.
    pub problem: String,
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

    /// Parses `text` into a JSON value.
    pub fn read(self, text: &str) -> Result<serde_json::Value, ParseError> {
        let value: serde_json::Value = match self {
            Self::Json => serde_json::from_str(text)
                .map_err(|e| ParseError::root(format!("invalid JSON: {e}")))?,
            Self::Yaml => serde_yaml_ng::from_str(text)
                .map_err(|e| ParseError::root(format!("invalid YAML: {e}")))?,
        };
        if value.is_null() {
            return Err(ParseError::root("the document is empty"));
        }
        Ok(value)
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

    /// Whether the schema knows the message `full_name`.
    pub fn knows(&self, full_name: &str) -> bool {
        self.pool.get_message_by_name(full_name).is_some()
    }

    /// Parses `text` as the proto3 JSON mapping of message `T` and returns it as the typed
    /// (prost) message. Errors name the path of the offending field.
    pub fn parse<T: Message + prost::Name + Default>(
        &self,
        text: &str,
        format: Format,
    ) -> Result<T, ParseError> {
        self.parse_value(format.read(text)?)
    }

    /// Reads a JSON value as message `T`.
    pub fn parse_value<T: Message + prost::Name + Default>(
        &self,
        value: serde_json::Value,
    ) -> Result<T, ParseError> {
        let bytes = self.encode_value(&T::full_name(), value)?;
        T::decode(bytes.as_slice()).map_err(|e| {
            ParseError::root(format!("could not re-encode as {}: {e}", T::full_name()))
        })
    }

    /// Reads a JSON object that names its own type with `@type` (as a resource in a file of the
    /// test xDS server does) and returns it packed in an `Any`.
    pub fn parse_any(
        &self,
        value: serde_json::Value,
    ) -> Result<envoy_types::pb::google::protobuf::Any, ParseError> {
        let type_url = value
            .get("@type")
            .and_then(serde_json::Value::as_str)
            .ok_or_else(|| ParseError::root("a resource needs an \"@type\""))?
            .to_string();
        let full_name = type_url.rsplit('/').next().unwrap_or_default().to_string();
        let mut value = value;
        if let Some(object) = value.as_object_mut() {
            object.remove("@type");
        }
        let bytes = self
            .encode_value(&full_name, value)
            .map_err(|e| ParseError {
                path: e.path,
                problem: format!("{} (in a {full_name})", e.problem),
            })?;
        Ok(envoy_types::pb::google::protobuf::Any {
            type_url,
            value: bytes,
        })
    }

    /// Protobuf-encodes a JSON value as message `full_name`.
    pub fn encode_value(
        &self,
        full_name: &str,
        value: serde_json::Value,
    ) -> Result<Vec<u8>, ParseError> {
        let desc = self.pool.get_message_by_name(full_name).ok_or_else(|| {
            ParseError::root(format!(
                "message '{full_name}' not found: this @type is not one Skiff supports (or not a known type at all)"
            ))
        })?;
        let options = DeserializeOptions::new().deny_unknown_fields(true);
        let mut track = serde_path_to_error::Track::new();
        let de = serde_path_to_error::Deserializer::new(value, &mut track);
        let dynamic =
            DynamicMessage::deserialize_with_options(desc, de, &options).map_err(|e| {
                let path = track.path().to_string();
                let mut path = if path == "." { String::new() } else { path };
                let (problem, unknown) = describe_json_error(&e.to_string());
                if let Some(field) = unknown {
                    if !path.is_empty() {
                        path.push('.');
                    }
                    path.push_str(&field);
                }
                ParseError { path, problem }
            })?;
        Ok(dynamic.encode_to_vec())
    }

    /// Renders a protobuf-encoded message of type `full_name` as a proto3 JSON value, with `Any`
    /// expanded and field names as in the `.proto` files (as Envoy's admin does).
    pub fn to_value(&self, full_name: &str, bytes: &[u8]) -> Result<serde_json::Value, String> {
        let msg = self.dynamic(full_name, bytes)?;
        msg.serialize_with_options(serde_json::value::Serializer, &Self::out_options())
            .map_err(|e| e.to_string())
    }

    /// Renders a protobuf-encoded message of type `full_name` as pretty proto3 JSON.
    pub fn to_json(&self, full_name: &str, bytes: &[u8]) -> Result<String, String> {
        let msg = self.dynamic(full_name, bytes)?;
        let mut out = Vec::new();
        let mut ser = serde_json::Serializer::with_formatter(
            &mut out,
            serde_json::ser::PrettyFormatter::with_indent(b" "),
        );
        msg.serialize_with_options(&mut ser, &Self::out_options())
            .map_err(|e| e.to_string())?;
        String::from_utf8(out).map_err(|e| e.to_string())
    }

    fn dynamic(&self, full_name: &str, bytes: &[u8]) -> Result<DynamicMessage, String> {
        let desc = self
            .pool
            .get_message_by_name(full_name)
            .ok_or_else(|| format!("unknown message type {full_name}"))?;
        DynamicMessage::decode(desc, bytes).map_err(|e| e.to_string())
    }

    fn out_options() -> SerializeOptions {
        SerializeOptions::new()
            .use_proto_field_name(true)
            .stringify_64_bit_integers(true)
    }
}

// === impl ParseError ===

impl ParseError {
    fn root(problem: impl Into<String>) -> Self {
        Self {
            path: String::new(),
            problem: problem.into(),
        }
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.problem)
        } else {
            write!(f, "{}: {}", self.path, self.problem)
        }
    }
}

impl std::error::Error for ParseError {}

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
mod tests;

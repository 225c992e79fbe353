//! The Envoy API schema, for configuration: [`xds_client::schema`] with errors as
//! [`ConfigError`]s.
//!
//! Only configuration loading and the admin config dump use this; the data path never does. The
//! pool is built on demand and dropped afterwards because it costs a few MB of memory.

use prost::Message;

use super::error::{ConfigError, Path};
pub use xds_client::schema::Format;

/// A loaded descriptor pool for the Envoy API and the Istio extension configs.
#[derive(Debug)]
pub struct Schema {
    inner: xds_client::schema::Schema,
}

// === impl Schema ===

impl Schema {
    /// Decodes the embedded descriptor set.
    pub fn load() -> Self {
        Self {
            inner: xds_client::schema::Schema::load(),
        }
    }

    /// The schema without the config-error wrapping.
    pub fn inner(&self) -> &xds_client::schema::Schema {
        &self.inner
    }

    /// Parses `text` as the proto3 JSON mapping of message `T` and returns it as the typed
    /// (prost) message. Errors name the path of the offending field.
    pub fn parse<T: Message + prost::Name + Default>(
        &self,
        text: &str,
        format: Format,
    ) -> Result<T, ConfigError> {
        self.inner.parse(text, format).map_err(config_error)
    }

    /// Renders a protobuf-encoded message of type `full_name` as pretty proto3 JSON, with `Any`
    /// expanded and field names as in the `.proto` files (as Envoy's admin does).
    pub fn to_json(&self, full_name: &str, bytes: &[u8]) -> Result<String, String> {
        self.inner.to_json(full_name, bytes)
    }
}

/// A schema error as a configuration error at the same path.
pub(crate) fn config_error(e: xds_client::schema::ParseError) -> ConfigError {
    let path = if e.path.is_empty() {
        Path::root()
    } else {
        Path::named(e.path)
    };
    ConfigError::new(&path, e.problem)
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::config::bootstrap::v3::Bootstrap;

    #[test]
    fn errors_keep_the_path() {
        let schema = Schema::load();
        let text = "static_resources:\n  listeners:\n  - name: l\n    colour: blue\n";
        let err = schema.parse::<Bootstrap>(text, Format::Yaml).unwrap_err();
        assert_eq!(err.path.as_str(), "static_resources.listeners[0].colour");
        assert!(err.problem.contains("unknown field"), "{}", err.problem);
    }
}

//! Resources from the ADS stream: each one decoded from its `Any` and converted alone, with the
//! same rules as the bootstrap's static resources. Errors name paths inside the resource, so a
//! NACK says exactly what Skiff refused.

use envoy_types::pb::{
    envoy::config::{
        cluster::v3::Cluster as XdsCluster, endpoint::v3::ClusterLoadAssignment,
        listener::v3::Listener as XdsListener, route::v3::RouteConfiguration,
    },
    google::protobuf::Any,
};
use prost::{Message, Name};

use super::{
    Cluster, ConfigError, ConfigErrors, Listener, LoadAssignment, RouteConfig,
    error::{Ctx, Path},
};

/// Converts a `Listener` resource.
pub fn listener(any: &Any) -> Result<Listener, ConfigErrors> {
    let proto: XdsListener = decode(any)?;
    let mut ctx = Ctx::default();
    let path = Path::root();
    if proto.name.is_empty() {
        ctx.error(&path.field("name"), "a listener from LDS needs a name");
    }
    let name = proto.name.clone();
    let l = Listener::convert(&mut ctx, &path, &proto, &name, None);
    ctx.finish(l)
}

/// Converts a `Cluster` resource.
pub fn cluster(any: &Any) -> Result<Cluster, ConfigErrors> {
    let proto: XdsCluster = decode(any)?;
    let mut ctx = Ctx::default();
    let c = Cluster::convert(&mut ctx, &Path::root(), &proto);
    ctx.finish(c)
}

/// Converts a `RouteConfiguration` resource. Routes may name clusters that do not exist (yet):
/// requests to them get Envoy's 503 with `NC`.
pub fn route_config(any: &Any) -> Result<RouteConfig, ConfigErrors> {
    let proto: RouteConfiguration = decode(any)?;
    let mut ctx = Ctx::default();
    let rc = RouteConfig::convert(&mut ctx, &Path::root(), &proto, None);
    ctx.finish(rc)
}

/// Converts a `Secret` resource (SDS).
pub fn secret(any: &Any) -> Result<(String, super::SecretData), ConfigErrors> {
    let proto: envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::Secret =
        decode(any)?;
    let mut ctx = Ctx::default();
    let s = super::SecretData::convert(&mut ctx, &Path::root(), &proto);
    ctx.finish(s).map(|s| (proto.name, s))
}

/// Converts a `ClusterLoadAssignment` resource.
pub fn load_assignment(any: &Any) -> Result<LoadAssignment, ConfigErrors> {
    let proto: ClusterLoadAssignment = decode(any)?;
    let mut ctx = Ctx::default();
    let la = LoadAssignment::convert(&mut ctx, &Path::root(), &proto);
    ctx.finish(la)
}

fn decode<T: Message + Name + Default>(any: &Any) -> Result<T, ConfigErrors> {
    if any.type_url != T::type_url() {
        return Err(ConfigError::new(
            &Path::root(),
            format!("a {} was expected, not {}", T::full_name(), any.type_url),
        )
        .into());
    }
    T::decode(any.value.as_slice()).map_err(|e| {
        ConfigError::new(
            &Path::root(),
            format!("does not decode as {}: {e}", T::full_name()),
        )
        .into()
    })
}

//! Arbitrary bytes as an xDS resource from the control plane: the first byte picks the type
//! (listener, cluster, route configuration, endpoints), the rest is its protobuf encoding.
//! Decoding and conversion return errors (which become a NACK) and never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use skiff_proxy::config::xds;
use xds_client::type_url;

fuzz_target!(|data: &[u8]| {
    let Some((&which, bytes)) = data.split_first() else { return };
    let type_url = [
        type_url::LISTENER,
        type_url::CLUSTER,
        type_url::ROUTE,
        type_url::ENDPOINT,
    ][usize::from(which % 4)];
    let any = envoy_types::pb::google::protobuf::Any {
        type_url: type_url.to_string(),
        value: bytes.to_vec(),
    };
    let _ = match which % 4 {
        0 => xds::listener(&any).map(drop),
        1 => xds::cluster(&any).map(drop),
        2 => xds::route_config(&any).map(drop),
        _ => xds::load_assignment(&any).map(drop),
    };
});

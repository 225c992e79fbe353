//! Arbitrary bytes as ADS responses, state of the world and delta, fed to the client's protocol
//! state machine with a handler that converts every resource as the proxy does. The client
//! answers with an ACK or a NACK, or ignores the response, and never panics.
#![no_main]

use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryResponse, DiscoveryResponse};
use libfuzzer_sys::fuzz_target;
use prost::Message;
use skiff_proxy::config::xds;
use xds_client::{DeltaClient, Handler, NodeIdentity, Rejected, SotwClient, Update, Watch, type_url};

/// Converts what arrives, as the proxy's store does before applying it.
struct Convert;

impl Handler for Convert {
    fn apply(&mut self, type_url: &str, update: Update<'_>) -> Vec<Rejected> {
        let mut rejected = Vec::new();
        for r in &update.added {
            let result = match type_url {
                type_url::LISTENER => xds::listener(r.any).map(drop),
                type_url::CLUSTER => xds::cluster(r.any).map(drop),
                type_url::ROUTE => xds::route_config(r.any).map(drop),
                _ => xds::load_assignment(r.any).map(drop),
            };
            if let Err(e) = result {
                rejected.push(Rejected::new(r.name, e));
            }
        }
        rejected
    }
}

fn watches() -> Vec<Watch> {
    vec![
        Watch::wildcard(type_url::CLUSTER),
        Watch::named(type_url::ENDPOINT, ["a", "b"]),
        Watch::wildcard(type_url::LISTENER),
        Watch::named(type_url::ROUTE, ["r"]),
    ]
}

fuzz_target!(|data: &[u8]| {
    let node = NodeIdentity::new([10, 0, 0, 1].into(), "fuzz-0", "default").to_node();
    // Several responses per input: each chunk is length-prefixed by one byte.
    let mut sotw = SotwClient::new(node.clone(), watches());
    let mut delta = DeltaClient::new(node, watches());
    let _ = sotw.start_stream();
    let _ = delta.start_stream();
    let mut rest = data;
    while let Some((&len, tail)) = rest.split_first() {
        let n = usize::from(len).min(tail.len());
        let (chunk, tail) = tail.split_at(n);
        rest = tail;
        if let Ok(r) = DiscoveryResponse::decode(chunk) {
            let _ = sotw.handle_response(&r, &mut Convert);
        }
        if let Ok(r) = DeltaDiscoveryResponse::decode(chunk) {
            let _ = delta.handle_response(&r, &mut Convert);
        }
    }
});

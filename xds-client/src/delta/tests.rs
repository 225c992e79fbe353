use std::collections::HashMap;

use envoy_types::pb::envoy::service::discovery::v3::Resource as XdsResource;

use super::*;
use crate::{
    Interest,
    test_support::*,
    type_url::{CLUSTER, ENDPOINT, LISTENER},
};

/// CDS by wildcard, EDS for c1, LDS by wildcard.
fn client() -> DeltaClient {
    DeltaClient::new(
        node(),
        [
            Watch::wildcard(CLUSTER),
            Watch::named(ENDPOINT, ["c1"]),
            Watch::wildcard(LISTENER),
        ],
    )
    .with_clock(pinned_clock)
}

fn streaming() -> DeltaClient {
    let mut client = client();
    client.start_stream();
    client
}

fn versions(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn initial_requests_subscribe_named_types_and_use_legacy_wildcard_for_the_rest() {
    let mut client = client();
    let requests = client.start_stream();
    let types: Vec<&str> = requests.iter().map(|r| r.type_url.as_str()).collect();
    assert_eq!(types, [CLUSTER, ENDPOINT, LISTENER]);
    assert!(requests[0].resource_names_subscribe.is_empty());
    assert_eq!(requests[1].resource_names_subscribe, ["c1"]);
    assert!(requests[2].resource_names_subscribe.is_empty());
    assert_eq!(requests[0].node, Some(node()));
    assert_eq!(requests[1].node, None);
    assert_eq!(requests[2].node, None);
    for request in &requests {
        assert!(
            request.initial_resource_versions.is_empty(),
            "nothing held yet"
        );
        assert_eq!(request.response_nonce, "");
    }
}

#[test]
fn ack_echoes_the_nonce_and_records_each_resource_version() {
    let mut client = streaming();
    let mut handler = Recorder::default();
    let response = delta(
        CLUSTER,
        "n1",
        vec![
            delta_resource("c1", "7", cluster("c1", "a")),
            delta_resource("c2", "9", cluster("c2", "a")),
        ],
        &[],
    );
    let ack = client
        .handle_response(&response, &mut handler)
        .expect("watched");

    assert_eq!(ack.type_url, CLUSTER);
    assert_eq!(ack.response_nonce, "n1");
    assert_eq!(ack.error_detail, None);
    assert_eq!(ack.node, None);
    assert!(ack.resource_names_subscribe.is_empty());
    assert_eq!(
        handler.last().added,
        [("c1".into(), "7".into()), ("c2".into(), "9".into())]
    );
    let state = client.state(CLUSTER).expect("watched");
    assert_eq!(state.resource_version("c1"), Some("7"));
    assert_eq!(state.resource_version("c2"), Some("9"));
}

#[test]
fn nack_carries_error_detail_and_only_the_rejected_resource_keeps_its_old_version() {
    let mut client = streaming();
    let mut handler = Recorder::default();
    let first = delta(
        LISTENER,
        "n1",
        vec![delta_resource("l1", "1", listener("l1", 80, "r1"))],
        &[],
    );
    client
        .handle_response(&first, &mut handler)
        .expect("watched");

    let second = delta(
        LISTENER,
        "n2",
        vec![
            delta_resource("l1", "2", listener_without_address("l1")),
            delta_resource("l2", "1", listener("l2", 81, "r2")),
            delta_resource("l3", "1", listener_without_address("l3")),
        ],
        &[],
    );
    let nack = client
        .handle_response(&second, &mut handler)
        .expect("watched");

    assert_eq!(nack.response_nonce, "n2");
    let status = nack.error_detail.expect("a NACK carries error_detail");
    assert_eq!(status.code, 13);
    assert_eq!(
        status.message,
        r#"envoy.config.listener.v3.Listener rejected "l1": listener has no address; "l3": listener has no address"#
    );
    let state = client.state(LISTENER).expect("watched");
    assert_eq!(
        state.resource_version("l1"),
        Some("1"),
        "the previous l1 stays in use"
    );
    assert_eq!(
        state.resource_version("l2"),
        Some("1"),
        "l2 applies on its own"
    );
    assert_eq!(state.resource_version("l3"), None);
}

#[test]
fn removals_reach_the_handler_and_drop_the_resource() {
    let mut client = streaming();
    let mut handler = Recorder::default();
    let add = delta(
        CLUSTER,
        "n1",
        vec![
            delta_resource("c1", "1", cluster("c1", "a")),
            delta_resource("c2", "1", cluster("c2", "a")),
        ],
        &[],
    );
    client.handle_response(&add, &mut handler).expect("watched");
    let remove = delta(CLUSTER, "n2", vec![], &["c2", "never-seen"]);
    let ack = client
        .handle_response(&remove, &mut handler)
        .expect("watched");

    assert_eq!(ack.error_detail, None);
    assert_eq!(
        handler.last().removed,
        ["c2"],
        "a name never held is not a removal"
    );
    assert_eq!(
        handler.last().absent,
        ["never-seen"],
        "but it is news: the server says it does not exist"
    );
    assert!(handler.last().added.is_empty());
    let held: Vec<(&str, &str)> = client
        .state(CLUSTER)
        .expect("watched")
        .resources()
        .collect();
    assert_eq!(held, [("c1", "1")]);
}

#[test]
fn removed_named_resource_stays_subscribed() {
    let mut client = streaming();
    let mut handler = Recorder::default();
    let add = delta(
        ENDPOINT,
        "n1",
        vec![delta_resource("c1", "1", endpoints("c1", 0))],
        &[],
    );
    client.handle_response(&add, &mut handler).expect("watched");
    let remove = delta(ENDPOINT, "n2", vec![], &["c1"]);
    client
        .handle_response(&remove, &mut handler)
        .expect("watched");

    assert_eq!(handler.last().removed, ["c1"]);
    let state = client.state(ENDPOINT).expect("watched");
    assert_eq!(state.resource_version("c1"), None);
    assert_eq!(
        state.interest(),
        &Interest::Named(["c1".to_string()].into())
    );
}

#[test]
fn subscribe_and_unsubscribe_send_only_the_difference_without_nonce() {
    let mut client = streaming();
    let mut handler = Recorder::default();
    let eds = delta(
        ENDPOINT,
        "n1",
        vec![delta_resource("c1", "1", endpoints("c1", 0))],
        &[],
    );
    client.handle_response(&eds, &mut handler).expect("watched");

    let request = client
        .set_names(ENDPOINT, ["c1", "c2", "c3"])
        .expect("named")
        .expect("names changed");
    assert_eq!(request.resource_names_subscribe, ["c2", "c3"]);
    assert!(request.resource_names_unsubscribe.is_empty());
    assert_eq!(
        request.response_nonce, "",
        "a spontaneous request has no nonce"
    );
    assert_eq!(request.error_detail, None);

    let request = client
        .unsubscribe(ENDPOINT, ["c1", "c3"])
        .expect("named")
        .expect("names changed");
    assert!(request.resource_names_subscribe.is_empty());
    assert_eq!(request.resource_names_unsubscribe, ["c1", "c3"]);
    assert_eq!(
        client
            .state(ENDPOINT)
            .and_then(|s| s.resource_version("c1")),
        None,
        "an unsubscribed resource is forgotten"
    );

    assert_eq!(
        client.subscribe(ENDPOINT, ["c2"]),
        Ok(None),
        "already subscribed"
    );
}

#[test]
fn reconnect_announces_held_versions_in_initial_resource_versions() {
    let mut client = streaming();
    let mut handler = Recorder::default();
    let cds = delta(
        CLUSTER,
        "n1",
        vec![
            delta_resource("c1", "1", cluster("c1", "a")),
            delta_resource("c2", "2", cluster("c2", "a")),
        ],
        &[],
    );
    client.handle_response(&cds, &mut handler).expect("watched");
    let eds = delta(
        ENDPOINT,
        "n2",
        vec![delta_resource("c1", "7", endpoints("c1", 0))],
        &[],
    );
    client.handle_response(&eds, &mut handler).expect("watched");

    client.on_disconnect();
    assert_eq!(
        client.subscribe(ENDPOINT, ["c2"]),
        Ok(None),
        "no stream to send on"
    );
    let requests = client.start_stream();

    assert_eq!(requests[0].type_url, CLUSTER);
    assert!(
        requests[0].resource_names_subscribe.is_empty(),
        "still wildcard"
    );
    assert_eq!(
        requests[0].initial_resource_versions,
        versions(&[("c1", "1"), ("c2", "2")])
    );
    assert_eq!(requests[0].node, Some(node()));
    assert_eq!(requests[0].response_nonce, "");
    assert_eq!(requests[1].type_url, ENDPOINT);
    assert_eq!(
        requests[1].resource_names_subscribe,
        ["c1", "c2"],
        "the whole interest, including the name added while disconnected"
    );
    assert_eq!(
        requests[1].initial_resource_versions,
        versions(&[("c1", "7")])
    );
    assert_eq!(requests[1].node, None);
}

#[test]
fn rejected_resources_are_announced_at_the_version_in_use() {
    let mut client = streaming();
    let mut handler = Recorder::default();
    let first = delta(
        CLUSTER,
        "n1",
        vec![delta_resource("c1", "1", cluster("c1", "a"))],
        &[],
    );
    client
        .handle_response(&first, &mut handler)
        .expect("watched");
    handler.refuse.insert("c1".into(), "bad".into());
    handler.refuse.insert("c2".into(), "bad".into());
    let second = delta(
        CLUSTER,
        "n2",
        vec![
            delta_resource("c1", "2", cluster("c1", "b")),
            delta_resource("c2", "1", cluster("c2", "a")),
        ],
        &[],
    );
    client
        .handle_response(&second, &mut handler)
        .expect("watched");

    client.on_disconnect();
    let requests = client.start_stream();
    assert_eq!(
        requests[0].initial_resource_versions,
        versions(&[("c1", "1")])
    );
}

#[test]
fn a_name_both_updated_and_removed_rejects_the_whole_response() {
    let mut client = streaming();
    let mut handler = Recorder::default();
    let response = delta(
        CLUSTER,
        "n1",
        vec![delta_resource("c1", "1", cluster("c1", "a"))],
        &["c1"],
    );
    let nack = client
        .handle_response(&response, &mut handler)
        .expect("watched");
    assert_eq!(
        nack.error_detail.expect("NACK").message,
        r#"envoy.config.cluster.v3.Cluster response rejected: resource "c1" is both updated and removed"#
    );
    assert!(handler.seen.is_empty());
    assert_eq!(
        client.metrics().get(CLUSTER).map(|m| m.updates_rejected),
        Some(1)
    );
}

#[test]
fn heartbeat_is_skipped_but_a_payloadless_new_version_is_rejected() {
    let mut client = streaming();
    let mut handler = Recorder::default();
    let first = delta(
        CLUSTER,
        "n1",
        vec![delta_resource("c1", "1", cluster("c1", "a"))],
        &[],
    );
    client
        .handle_response(&first, &mut handler)
        .expect("watched");
    let bare = |version: &str| XdsResource {
        name: "c1".to_string(),
        version: version.to_string(),
        ..Default::default()
    };

    let heartbeat = delta(CLUSTER, "n2", vec![bare("1")], &[]);
    let ack = client
        .handle_response(&heartbeat, &mut handler)
        .expect("watched");
    assert_eq!(ack.error_detail, None);
    assert!(handler.last().added.is_empty());

    let empty = delta(CLUSTER, "n3", vec![bare("2")], &[]);
    let nack = client
        .handle_response(&empty, &mut handler)
        .expect("watched");
    assert_eq!(
        nack.error_detail.expect("NACK").message,
        r#"envoy.config.cluster.v3.Cluster rejected "c1": resource has no payload, and version "2" is not the one held"#
    );
    assert_eq!(
        client.state(CLUSTER).and_then(|s| s.resource_version("c1")),
        Some("1")
    );
}

#[test]
fn resources_outside_a_named_subscription_are_ignored() {
    let mut client = streaming();
    let mut handler = Recorder::default();
    let response = delta(
        ENDPOINT,
        "n1",
        vec![
            delta_resource("c1", "1", endpoints("c1", 0)),
            delta_resource("c9", "1", endpoints("c9", 0)),
        ],
        &[],
    );
    client
        .handle_response(&response, &mut handler)
        .expect("watched");
    assert_eq!(handler.last().added, [("c1".into(), "1".into())]);
    assert_eq!(
        client
            .state(ENDPOINT)
            .and_then(|s| s.resource_version("c9")),
        None
    );
}

#[test]
fn metrics_count_accepted_and_rejected_updates_per_type() {
    let mut client = streaming();
    let mut handler = Recorder::default();
    let ok = delta(
        CLUSTER,
        "n1",
        vec![delta_resource("c1", "1", cluster("c1", "a"))],
        &[],
    );
    client.handle_response(&ok, &mut handler).expect("watched");
    let bad = delta(
        LISTENER,
        "n2",
        vec![delta_resource("l1", "1", listener_without_address("l1"))],
        &[],
    );
    client.handle_response(&bad, &mut handler).expect("watched");

    let cds = client.metrics().get(CLUSTER).expect("counted");
    assert_eq!((cds.updates_accepted, cds.updates_rejected), (1, 0));
    assert_eq!(cds.last_update, Some(pinned_clock()));
    let lds = client.metrics().get(LISTENER).expect("counted");
    assert_eq!((lds.updates_accepted, lds.updates_rejected), (0, 1));
    assert_eq!(lds.resources_rejected, 1);
    assert_eq!(lds.last_rejection, Some(pinned_clock()));
}

#[test]
fn a_subscribed_name_the_server_says_does_not_exist_is_reported_absent() {
    let mut client = streaming();
    let mut handler = Recorder::default();
    let response = delta(ENDPOINT, "n1", vec![], &["c1", "not-subscribed"]);
    let ack = client
        .handle_response(&response, &mut handler)
        .expect("watched");
    assert_eq!(ack.error_detail, None);
    assert!(handler.last().removed.is_empty());
    assert_eq!(handler.last().absent, ["c1"], "only subscribed names count");
}

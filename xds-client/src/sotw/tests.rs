use std::collections::BTreeSet;

use envoy_types::pb::envoy::service::discovery::v3::Resource as XdsResource;
use prost::Message;

use super::*;
use crate::{
    Interest,
    test_support::*,
    type_url::{CLUSTER, ENDPOINT, LISTENER, ROUTE},
};

/// CDS, EDS, LDS, RDS in Envoy's order; EDS and RDS start with no names.
fn client() -> SotwClient {
    SotwClient::new(
        node(),
        [
            Watch::wildcard(CLUSTER),
            Watch::named(ENDPOINT, [] as [&str; 0]),
            Watch::wildcard(LISTENER),
            Watch::named(ROUTE, [] as [&str; 0]),
        ],
    )
    .with_clock(pinned_clock)
}

fn streaming() -> SotwClient {
    let mut client = client();
    client.start_stream();
    client
}

fn names(request: &DiscoveryRequest) -> Vec<&str> {
    request.resource_names.iter().map(String::as_str).collect()
}

#[test]
fn initial_requests_follow_watch_order_and_skip_named_types_without_names() {
    let mut client = client();
    let requests = client.start_stream();
    let types: Vec<&str> = requests.iter().map(|r| r.type_url.as_str()).collect();
    assert_eq!(types, [CLUSTER, LISTENER]);
    for request in &requests {
        assert!(request.resource_names.is_empty(), "wildcard sends no names");
        assert_eq!(request.version_info, "");
        assert_eq!(request.response_nonce, "");
        assert_eq!(request.error_detail, None);
    }
}

#[test]
fn node_is_sent_only_on_the_first_request_of_a_stream() {
    let mut client = client();
    let requests = client.start_stream();
    assert_eq!(requests[0].node, Some(node()));
    assert_eq!(requests[1].node, None);

    let ack = client
        .handle_response(&sotw(CLUSTER, "v1", "n1", vec![]), &mut Recorder::default())
        .expect("CDS is watched");
    assert_eq!(ack.node, None);

    client.on_disconnect();
    let requests = client.start_stream();
    assert_eq!(
        requests[0].node,
        Some(node()),
        "a new stream sends it again"
    );
    assert_eq!(requests[1].node, None);
}

#[test]
fn node_goes_on_the_first_request_even_when_the_stream_starts_with_nothing_to_ask() {
    let mut client = SotwClient::new(node(), [Watch::named(ROUTE, [] as [&str; 0])]);
    assert!(client.start_stream().is_empty());
    let request = client
        .set_names(ROUTE, ["r1"])
        .expect("RDS is named")
        .expect("a stream is up");
    assert_eq!(request.node, Some(node()));
}

#[test]
fn ack_echoes_version_and_nonce() {
    let mut client = streaming();
    let mut handler = Recorder::default();
    let response = sotw(
        CLUSTER,
        "v1",
        "n1",
        vec![cluster("c1", "a"), cluster("c2", "a")],
    );
    let ack = client
        .handle_response(&response, &mut handler)
        .expect("watched");

    assert_eq!(ack.type_url, CLUSTER);
    assert_eq!(ack.version_info, "v1");
    assert_eq!(ack.response_nonce, "n1");
    assert_eq!(ack.error_detail, None);
    assert!(ack.resource_names.is_empty());
    let state = client.state(CLUSTER).expect("watched");
    assert_eq!(state.version(), "v1");
    assert_eq!(state.nonce(), "n1");
    assert_eq!(
        handler.last().added,
        [("c1".into(), "v1".into()), ("c2".into(), "v1".into())]
    );
}

#[test]
fn nack_keeps_last_good_version_and_names_the_rejected_resource() {
    let mut client = streaming();
    let mut handler = Recorder::default();
    let v1 = sotw(LISTENER, "v1", "n1", vec![listener("l1", 80, "r1")]);
    client.handle_response(&v1, &mut handler).expect("watched");

    let v2 = sotw(
        LISTENER,
        "v2",
        "n2",
        vec![listener("l1", 8080, "r1"), listener_without_address("l2")],
    );
    let nack = client.handle_response(&v2, &mut handler).expect("watched");

    assert_eq!(nack.version_info, "v1", "the last version accepted whole");
    assert_eq!(nack.response_nonce, "n2");
    let status = nack.error_detail.expect("a NACK carries error_detail");
    assert_eq!(status.code, 13);
    assert_eq!(
        status.message,
        r#"envoy.config.listener.v3.Listener rejected "l2": listener has no address"#
    );
    let state = client.state(LISTENER).expect("watched");
    assert_eq!(state.version(), "v1");
    assert_eq!(
        state.resource_version("l1"),
        Some("v2"),
        "the valid listener applies"
    );
    assert_eq!(
        state.resource_version("l2"),
        None,
        "the rejected one stays out"
    );
}

#[test]
fn rejected_resource_keeps_its_previous_version_until_a_good_one_arrives() {
    let mut client = streaming();
    let mut handler = Recorder::default();
    let v1 = sotw(CLUSTER, "v1", "n1", vec![cluster("c1", "a")]);
    client.handle_response(&v1, &mut handler).expect("watched");

    handler
        .refuse
        .insert("c1".into(), "bad outlier detection".into());
    let v2 = sotw(CLUSTER, "v2", "n2", vec![cluster("c1", "b")]);
    let nack = client.handle_response(&v2, &mut handler).expect("watched");
    assert!(nack.error_detail.is_some());
    assert_eq!(
        client.state(CLUSTER).and_then(|s| s.resource_version("c1")),
        Some("v1"),
        "still held (and not removed, though the full-state response rejected it)"
    );

    handler.refuse.clear();
    let v3 = sotw(CLUSTER, "v3", "n3", vec![cluster("c1", "b")]);
    let ack = client.handle_response(&v3, &mut handler).expect("watched");
    assert_eq!(ack.error_detail, None);
    assert_eq!(ack.version_info, "v3");
    assert_eq!(handler.last().added, [("c1".into(), "v3".into())]);
}

#[test]
fn unchanged_resources_are_not_handed_to_the_handler_again() {
    let mut client = streaming();
    let mut handler = Recorder::default();
    let v1 = sotw(
        CLUSTER,
        "v1",
        "n1",
        vec![cluster("c1", "a"), cluster("c2", "a")],
    );
    client.handle_response(&v1, &mut handler).expect("watched");
    let v2 = sotw(
        CLUSTER,
        "v2",
        "n2",
        vec![cluster("c1", "a"), cluster("c2", "b")],
    );
    client.handle_response(&v2, &mut handler).expect("watched");

    assert_eq!(handler.last().added, [("c2".into(), "v2".into())]);
    assert!(handler.last().removed.is_empty());
    let state = client.state(CLUSTER).expect("watched");
    assert_eq!(state.resource_version("c1"), Some("v1"));
    assert_eq!(state.resource_version("c2"), Some("v2"));
}

#[test]
fn full_state_response_removes_absent_listeners_and_an_empty_one_removes_all() {
    let mut client = streaming();
    let mut handler = Recorder::default();
    let v1 = sotw(
        LISTENER,
        "v1",
        "n1",
        vec![listener("l1", 80, "r1"), listener("l2", 81, "r2")],
    );
    client.handle_response(&v1, &mut handler).expect("watched");
    let v2 = sotw(LISTENER, "v2", "n2", vec![listener("l1", 80, "r1")]);
    client.handle_response(&v2, &mut handler).expect("watched");
    assert!(handler.last().added.is_empty(), "l1 did not change");
    assert_eq!(handler.last().removed, ["l2"]);

    let v3 = sotw(LISTENER, "v3", "n3", vec![]);
    client.handle_response(&v3, &mut handler).expect("watched");
    assert_eq!(handler.last().removed, ["l1"]);
    assert_eq!(
        client.state(LISTENER).map(|s| s.resources().count()),
        Some(0)
    );
}

#[test]
fn route_response_only_adds_and_updates() {
    let mut client = streaming();
    let mut handler = Recorder::default();
    client.set_names(ROUTE, ["r1", "r2"]).expect("named");
    let v1 = sotw(ROUTE, "v1", "n1", vec![route("r1", "a")]);
    client.handle_response(&v1, &mut handler).expect("watched");
    let v2 = sotw(ROUTE, "v2", "n2", vec![route("r2", "a")]);
    client.handle_response(&v2, &mut handler).expect("watched");

    assert!(handler.last().removed.is_empty());
    let state = client.state(ROUTE).expect("watched");
    assert_eq!(state.resource_version("r1"), Some("v1"));
    assert_eq!(state.resource_version("r2"), Some("v2"));
}

#[test]
fn duplicate_names_reject_the_whole_response() {
    let mut client = streaming();
    let mut handler = Recorder::default();
    let v1 = sotw(CLUSTER, "v1", "n1", vec![cluster("c0", "a")]);
    client.handle_response(&v1, &mut handler).expect("watched");
    let v2 = sotw(
        CLUSTER,
        "v2",
        "n2",
        vec![cluster("c1", "a"), cluster("c1", "b")],
    );
    let nack = client.handle_response(&v2, &mut handler).expect("watched");

    assert_eq!(nack.version_info, "v1");
    assert_eq!(nack.response_nonce, "n2");
    assert_eq!(
        nack.error_detail.expect("NACK").message,
        r#"envoy.config.cluster.v3.Cluster response rejected: resource "c1" appears more than once"#
    );
    assert_eq!(handler.seen.len(), 1, "the handler never saw v2");
    assert_eq!(
        client.state(CLUSTER).and_then(|s| s.resource_version("c0")),
        Some("v1"),
        "nothing was removed either"
    );
}

#[test]
fn resource_of_another_type_rejects_the_whole_response() {
    let mut client = streaming();
    let response = sotw(LISTENER, "v1", "n1", vec![cluster("c1", "a")]);
    let nack = client
        .handle_response(&response, &mut Recorder::default())
        .expect("watched");
    assert_eq!(
        nack.error_detail.expect("NACK").message,
        "envoy.config.listener.v3.Listener response rejected: resource #0 has type \
         type.googleapis.com/envoy.config.cluster.v3.Cluster, the response has type \
         type.googleapis.com/envoy.config.listener.v3.Listener"
    );
}

#[test]
fn route_names_follow_what_the_accepted_listeners_reference() {
    let mut client = streaming();
    let mut handler = Recorder::default();
    let lds = sotw(
        LISTENER,
        "v1",
        "l-n1",
        vec![listener("l1", 80, "r1"), listener("l2", 81, "r2")],
    );
    client.handle_response(&lds, &mut handler).expect("watched");
    let subscribe = client
        .set_names(ROUTE, handler.referenced_routes())
        .expect("named")
        .expect("names changed");
    assert_eq!(names(&subscribe), ["r1", "r2"]);
    assert_eq!(subscribe.type_url, ROUTE);
    assert_eq!(
        subscribe.response_nonce, "",
        "no RDS response yet on this stream"
    );

    let rds = sotw(
        ROUTE,
        "v1",
        "r-n1",
        vec![route("r1", "a"), route("r2", "a")],
    );
    let ack = client.handle_response(&rds, &mut handler).expect("watched");
    assert_eq!(names(&ack), ["r1", "r2"]);

    // l2 goes away, and with it the only reference to r2.
    let lds = sotw(LISTENER, "v2", "l-n2", vec![listener("l1", 80, "r1")]);
    client.handle_response(&lds, &mut handler).expect("watched");
    let unsubscribe = client
        .set_names(ROUTE, handler.referenced_routes())
        .expect("named")
        .expect("names changed");
    assert_eq!(names(&unsubscribe), ["r1"]);
    assert_eq!(unsubscribe.version_info, "v1");
    assert_eq!(unsubscribe.response_nonce, "r-n1");
    assert_eq!(
        client.state(ROUTE).and_then(|s| s.resource_version("r2")),
        None,
        "an unsubscribed route is forgotten"
    );

    let again = client
        .set_names(ROUTE, handler.referenced_routes())
        .expect("named");
    assert_eq!(again, None, "unchanged names send nothing");
}

#[test]
fn emptying_the_names_unsubscribes_from_everything() {
    let mut client = SotwClient::new(node(), [Watch::named(ROUTE, ["r1"])]);
    assert_eq!(client.start_stream().len(), 1);
    let request = client
        .unsubscribe(ROUTE, ["r1"])
        .expect("named")
        .expect("names changed");
    assert!(
        request.resource_names.is_empty(),
        "after a request with names, an empty list means no interest"
    );
    client.on_disconnect();
    assert!(
        client.start_stream().is_empty(),
        "a new stream does not ask: an empty first request would read as a wildcard"
    );
}

#[test]
fn resources_outside_a_named_subscription_are_ignored() {
    let mut client = streaming();
    let mut handler = Recorder::default();
    client.set_names(ENDPOINT, ["c1"]).expect("named");
    let response = sotw(
        ENDPOINT,
        "v1",
        "n1",
        vec![endpoints("c1", 0), endpoints("c9", 0)],
    );
    let ack = client
        .handle_response(&response, &mut handler)
        .expect("watched");

    assert_eq!(ack.error_detail, None);
    assert_eq!(handler.last().added, [("c1".into(), "v1".into())]);
    assert_eq!(
        client
            .state(ENDPOINT)
            .and_then(|s| s.resource_version("c9")),
        None
    );
}

#[test]
fn a_response_to_a_stale_request_is_applied_and_acked_with_current_names() {
    let mut client = streaming();
    let mut handler = Recorder::default();
    client.set_names(ENDPOINT, ["c1"]).expect("named");
    let first = sotw(ENDPOINT, "v1", "n1", vec![endpoints("c1", 0)]);
    client
        .handle_response(&first, &mut handler)
        .expect("watched");

    let more = client
        .subscribe(ENDPOINT, ["c2"])
        .expect("named")
        .expect("names changed");
    assert_eq!(
        more.response_nonce, "n1",
        "a subscription change carries the latest nonce"
    );
    assert_eq!(names(&more), ["c1", "c2"]);

    // The server answers the request it had before seeing c2: only c1, at a new version.
    let stale = sotw(ENDPOINT, "v2", "n2", vec![endpoints("c1", 1)]);
    let ack = client
        .handle_response(&stale, &mut handler)
        .expect("watched");
    assert_eq!(ack.version_info, "v2");
    assert_eq!(ack.response_nonce, "n2");
    assert_eq!(names(&ack), ["c1", "c2"], "c2 is still wanted");
    assert_eq!(handler.last().added, [("c1".into(), "v2".into())]);
}

#[test]
fn reconnect_resends_accepted_versions_and_names_without_nonce() {
    let mut client = streaming();
    let mut handler = Recorder::default();
    let cds = sotw(CLUSTER, "c-v3", "n1", vec![cluster("c1", "a")]);
    client.handle_response(&cds, &mut handler).expect("watched");
    client.set_names(ROUTE, ["r1"]).expect("named");
    let rds = sotw(ROUTE, "r-v2", "n2", vec![route("r1", "a")]);
    client.handle_response(&rds, &mut handler).expect("watched");

    client.on_disconnect();
    assert!(!client.is_streaming());
    assert_eq!(client.state(CLUSTER).map(|s| s.nonce()), Some(""));
    assert_eq!(
        client.set_names(ROUTE, ["r1", "r2"]),
        Ok(None),
        "no stream to send on"
    );

    let requests = client.start_stream();
    let types: Vec<&str> = requests.iter().map(|r| r.type_url.as_str()).collect();
    assert_eq!(types, [CLUSTER, LISTENER, ROUTE]);
    assert_eq!(requests[0].version_info, "c-v3");
    assert_eq!(requests[0].response_nonce, "");
    assert_eq!(requests[0].node, Some(node()));
    assert_eq!(requests[2].version_info, "r-v2");
    assert_eq!(names(&requests[2]), ["r1", "r2"]);
    assert_eq!(requests[2].node, None);
    assert_eq!(
        client.state(CLUSTER).and_then(|s| s.resource_version("c1")),
        Some("c-v3"),
        "accepted resources survive the disconnect"
    );
}

#[test]
fn responses_without_stream_or_for_unwatched_types_get_no_reply() {
    let mut client = client();
    let response = sotw(CLUSTER, "v1", "n1", vec![]);
    assert_eq!(
        client.handle_response(&response, &mut Recorder::default()),
        Err(UnexpectedResponse::NoStream {
            type_url: CLUSTER.into()
        })
    );
    client.start_stream();
    let secret = sotw(crate::type_url::SECRET, "v1", "n1", vec![]);
    assert_eq!(
        client.handle_response(&secret, &mut Recorder::default()),
        Err(UnexpectedResponse::NotWatched {
            type_url: crate::type_url::SECRET.into()
        })
    );
}

#[test]
fn names_cannot_be_set_on_wildcard_or_unwatched_types() {
    let mut client = streaming();
    assert_eq!(
        client.set_names(CLUSTER, ["c1"]),
        Err(InvalidWatch::Wildcard {
            type_url: CLUSTER.into()
        })
    );
    assert_eq!(
        client.subscribe("type.googleapis.com/x.Y", ["a"]),
        Err(InvalidWatch::NotWatched {
            type_url: "type.googleapis.com/x.Y".into()
        })
    );
}

#[test]
fn metrics_count_accepted_and_rejected_updates_per_type() {
    let mut client = streaming();
    let mut handler = Recorder::default();
    let ok = sotw(CLUSTER, "v1", "n1", vec![cluster("c1", "a")]);
    client.handle_response(&ok, &mut handler).expect("watched");
    let ok = sotw(CLUSTER, "v2", "n2", vec![cluster("c1", "a")]);
    client.handle_response(&ok, &mut handler).expect("watched");
    let bad = sotw(
        LISTENER,
        "v1",
        "n3",
        vec![
            listener_without_address("l1"),
            listener_without_address("l2"),
        ],
    );
    client.handle_response(&bad, &mut handler).expect("watched");
    let unusable = sotw(LISTENER, "v2", "n4", vec![cluster("c1", "a")]);
    client
        .handle_response(&unusable, &mut handler)
        .expect("watched");

    let cds = client.metrics().get(CLUSTER).expect("counted");
    assert_eq!((cds.updates_accepted, cds.updates_rejected), (2, 0));
    assert_eq!(cds.last_update, Some(pinned_clock()));
    assert_eq!(cds.last_rejection, None);
    let lds = client.metrics().get(LISTENER).expect("counted");
    assert_eq!((lds.updates_accepted, lds.updates_rejected), (0, 2));
    assert_eq!(lds.resources_rejected, 2);
    assert_eq!(lds.last_update, None);
    assert_eq!(lds.last_rejection, Some(pinned_clock()));
    assert_eq!(client.metrics().get(ROUTE), None);
}

#[test]
fn resource_wrappers_are_unwrapped_and_heartbeats_keep_the_resource() {
    let mut client = streaming();
    let mut handler = Recorder::default();
    let wrapped = |name: &str, version: &str, payload| {
        let wrapper = XdsResource {
            name: name.to_string(),
            version: version.to_string(),
            resource: payload,
            ..Default::default()
        };
        envoy_types::pb::google::protobuf::Any {
            type_url: crate::type_url::RESOURCE_WRAPPER.to_string(),
            value: wrapper.encode_to_vec(),
        }
    };
    let v1 = sotw(
        CLUSTER,
        "v1",
        "n1",
        vec![wrapped("c1", "c1-a", Some(cluster("c1", "a")))],
    );
    client.handle_response(&v1, &mut handler).expect("watched");
    assert_eq!(handler.last().added, [("c1".into(), "c1-a".into())]);

    let heartbeat = sotw(CLUSTER, "v2", "n2", vec![wrapped("c1", "c1-a", None)]);
    let ack = client
        .handle_response(&heartbeat, &mut handler)
        .expect("watched");
    assert_eq!(ack.error_detail, None);
    assert!(handler.last().added.is_empty());
    assert!(
        handler.last().removed.is_empty(),
        "a heartbeat keeps c1 present"
    );
    assert_eq!(
        client.state(CLUSTER).and_then(|s| s.resource_version("c1")),
        Some("c1-a")
    );
}

#[test]
fn subscription_order_is_kept_and_a_repeated_watch_replaces_the_first() {
    let client = SotwClient::new(
        node(),
        [
            Watch::named(ROUTE, ["a"]),
            Watch::wildcard(CLUSTER),
            Watch::named(ROUTE, ["b"]),
        ],
    );
    let order: Vec<&str> = client.states().map(|s| s.type_url()).collect();
    assert_eq!(order, [ROUTE, CLUSTER]);
    let expected: BTreeSet<String> = ["b".to_string()].into();
    assert_eq!(
        client.state(ROUTE).map(|s| s.interest().clone()),
        Some(Interest::Named(expected))
    );
}

#[test]
fn undecodable_resource_rejects_the_whole_response() {
    let mut client = streaming();
    let mut handler = Recorder::default();
    let garbage = envoy_types::pb::google::protobuf::Any {
        type_url: CLUSTER.to_string(),
        value: vec![0x0a, 0xff],
    };
    let response = sotw(CLUSTER, "v1", "n1", vec![cluster("c1", "a"), garbage]);
    let nack = client
        .handle_response(&response, &mut handler)
        .expect("watched");
    let message = nack.error_detail.expect("NACK").message;
    assert!(
        message.starts_with(
            "envoy.config.cluster.v3.Cluster response rejected: resource #1 has no name: \
             payload does not decode: "
        ),
        "{message}"
    );
    assert!(handler.seen.is_empty(), "c1 is not applied either");
}

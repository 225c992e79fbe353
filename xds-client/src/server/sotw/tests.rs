use envoy_types::pb::google::rpc::Status;

use super::*;
use crate::{
    server::{
        protocol::Feedback,
        resources::{Resources, resource_name},
    },
    test_support::{cluster, endpoints, node},
    type_url::{CLUSTER, ENDPOINT},
};

fn snapshot(resources: &[Any]) -> Snapshot {
    Snapshot::empty().next(set(resources))
}

fn set(resources: &[Any]) -> Resources {
    let mut set = Resources::new();
    for any in resources {
        set.insert(any.clone()).unwrap();
    }
    set
}

fn request(type_url: &str, names: &[&str]) -> DiscoveryRequest {
    DiscoveryRequest {
        type_url: type_url.to_string(),
        resource_names: names.iter().map(|n| n.to_string()).collect(),
        ..Default::default()
    }
}

/// The request that ACKs `response` and keeps subscribing to `names`.
fn ack(response: &DiscoveryResponse, names: &[&str]) -> DiscoveryRequest {
    DiscoveryRequest {
        version_info: response.version_info.clone(),
        response_nonce: response.nonce.clone(),
        ..request(&response.type_url, names)
    }
}

fn nack(response: &DiscoveryResponse, names: &[&str], message: &str) -> DiscoveryRequest {
    DiscoveryRequest {
        error_detail: Some(Status {
            code: 3,
            message: message.to_string(),
            details: vec![],
        }),
        response_nonce: response.nonce.clone(),
        ..request(&response.type_url, names)
    }
}

fn names(response: &DiscoveryResponse) -> Vec<String> {
    response
        .resources
        .iter()
        .map(|any| resource_name(any).unwrap())
        .collect()
}

fn respond(stream: &mut SotwStream, request: DiscoveryRequest, at: &Snapshot) -> DiscoveryResponse {
    let step = stream.on_request(request, at).unwrap();
    step.response.expect("a response")
}

#[test]
fn an_empty_first_request_subscribes_to_every_resource() {
    let at = snapshot(&[cluster("a", "v1"), cluster("b", "v1"), endpoints("a", 0)]);
    let mut stream = SotwStream::new();
    let response = respond(&mut stream, request(CLUSTER, &[]), &at);
    assert_eq!(names(&response), ["a", "b"]);
    assert_eq!(response.version_info, "1");
    assert_eq!(response.type_url, CLUSTER);
    assert!(!response.nonce.is_empty());
    assert!(stream.types()[CLUSTER].wildcard);
}

#[test]
fn a_named_request_gets_only_the_named_resources_that_exist() {
    let at = snapshot(&[endpoints("a", 0), endpoints("b", 0)]);
    let mut stream = SotwStream::new();
    let response = respond(&mut stream, request(ENDPOINT, &["b", "missing"]), &at);
    assert_eq!(names(&response), ["b"]);
    let status = &stream.types()[ENDPOINT];
    assert!(!status.wildcard);
    assert_eq!(
        status.names,
        ["b".to_string(), "missing".to_string()].into()
    );
}

#[test]
fn an_ack_is_recorded_and_not_answered() {
    let at = snapshot(&[cluster("a", "v1")]);
    let mut stream = SotwStream::new();
    let first = DiscoveryRequest {
        node: Some(node()),
        ..request(CLUSTER, &[])
    };
    let response = respond(&mut stream, first, &at);
    let step = stream.on_request(ack(&response, &[]), &at).unwrap();
    assert!(step.response.is_none());
    assert_eq!(
        step.feedback,
        Some(Feedback::Ack {
            version: "1".to_string()
        })
    );
    let status = &stream.types()[CLUSTER];
    assert_eq!(status.acked_version.as_deref(), Some("1"));
    assert_eq!((status.acks, status.nacks, status.responses), (1, 0, 1));
    assert_eq!(stream.node_id(), Some(node().id.as_str()));
}

#[test]
fn a_nack_is_recorded_and_the_version_not_resent() {
    let at = snapshot(&[cluster("a", "v1")]);
    let mut stream = SotwStream::new();
    let response = respond(&mut stream, request(CLUSTER, &[]), &at);
    let step = stream
        .on_request(nack(&response, &[], "cluster a: bad"), &at)
        .unwrap();
    assert!(step.response.is_none());
    let status = &stream.types()[CLUSTER];
    assert_eq!(status.last_nack.as_deref(), Some("cluster a: bad"));
    assert_eq!((status.acks, status.nacks), (0, 1));
    assert_eq!(status.acked_version, None);
    assert!(stream.on_snapshot(&at).is_empty());
}

#[test]
fn a_stale_nonce_is_not_an_ack() {
    let at = snapshot(&[cluster("a", "v1")]);
    let mut stream = SotwStream::new();
    let first = respond(&mut stream, request(CLUSTER, &[]), &at);
    let next = at.next(set(&[cluster("a", "v2")]));
    let pushed = stream.on_snapshot(&next);
    assert_eq!(pushed.len(), 1);
    let step = stream.on_request(ack(&first, &[]), &next).unwrap();
    assert_eq!(step.feedback, None);
    assert!(step.response.is_none());
    assert_eq!(stream.types()[CLUSTER].acks, 0);
}

#[test]
fn a_new_snapshot_is_pushed_only_to_the_types_it_changes() {
    let at = snapshot(&[cluster("a", "v1"), endpoints("a", 0)]);
    let mut stream = SotwStream::new();
    respond(&mut stream, request(CLUSTER, &[]), &at);
    respond(&mut stream, request(ENDPOINT, &["a"]), &at);
    let next = at.next(set(&[cluster("a", "v1"), endpoints("a", 1)]));
    let pushed = stream.on_snapshot(&next);
    assert_eq!(pushed.len(), 1);
    assert_eq!(pushed[0].type_url, ENDPOINT);
    assert_eq!(pushed[0].version_info, "2");
    assert_eq!(pushed[0].resources, [endpoints("a", 1)]);
}

#[test]
fn a_removed_cluster_is_left_out_of_the_next_full_state() {
    let at = snapshot(&[cluster("a", "v1"), cluster("b", "v1")]);
    let mut stream = SotwStream::new();
    respond(&mut stream, request(CLUSTER, &[]), &at);
    let pushed = stream.on_snapshot(&at.next(set(&[cluster("b", "v1")])));
    assert_eq!(pushed.len(), 1);
    assert_eq!(names(&pushed[0]), ["b"]);
}

#[test]
fn a_change_to_an_unsubscribed_resource_is_not_pushed() {
    let at = snapshot(&[endpoints("a", 0), endpoints("b", 0)]);
    let mut stream = SotwStream::new();
    respond(&mut stream, request(ENDPOINT, &["a"]), &at);
    let next = at.next(set(&[endpoints("a", 0), endpoints("b", 1)]));
    assert!(stream.on_snapshot(&next).is_empty());
}

#[test]
fn new_names_are_answered_and_the_same_names_are_not() {
    let at = snapshot(&[endpoints("a", 0), endpoints("b", 0)]);
    let mut stream = SotwStream::new();
    let first = respond(&mut stream, request(ENDPOINT, &["a"]), &at);
    let step = stream.on_request(ack(&first, &["a"]), &at).unwrap();
    assert!(step.response.is_none());
    let step = stream.on_request(ack(&first, &["a", "b"]), &at).unwrap();
    let response = step.response.expect("new names are answered");
    assert_eq!(names(&response), ["a", "b"]);
    assert_ne!(response.nonce, first.nonce);
}

#[test]
fn an_empty_list_keeps_a_legacy_wildcard_but_otherwise_means_nothing() {
    let at = snapshot(&[cluster("a", "v1")]);
    let mut stream = SotwStream::new();
    let first = respond(&mut stream, request(CLUSTER, &[]), &at);
    assert!(
        stream
            .on_request(ack(&first, &[]), &at)
            .unwrap()
            .response
            .is_none()
    );
    assert!(stream.types()[CLUSTER].wildcard);

    let mut stream = SotwStream::new();
    let first = respond(&mut stream, request(CLUSTER, &["*"]), &at);
    assert_eq!(names(&first), ["a"]);
    let response = respond(&mut stream, ack(&first, &[]), &at);
    assert!(response.resources.is_empty());
    assert!(!stream.types()[CLUSTER].wildcard);
}

#[test]
fn a_request_without_a_type_url_is_invalid() {
    let mut stream = SotwStream::new();
    let err = stream
        .on_request(request("", &[]), &Snapshot::empty())
        .unwrap_err();
    assert_eq!(err, InvalidRequest::NoTypeUrl);
}

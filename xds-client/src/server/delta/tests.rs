use envoy_types::pb::google::{protobuf::Any, rpc::Status};

use super::*;
use crate::{
    server::{
        protocol::Feedback,
        resources::{Resources, resource_version},
    },
    test_support::{cluster, endpoints},
    type_url::{CLUSTER, ENDPOINT},
};

fn set(resources: &[Any]) -> Resources {
    let mut set = Resources::new();
    for any in resources {
        set.insert(any.clone()).unwrap();
    }
    set
}

fn snapshot(resources: &[Any]) -> Snapshot {
    Snapshot::empty().next(set(resources))
}

fn subscribe(type_url: &str, names: &[&str]) -> DeltaDiscoveryRequest {
    DeltaDiscoveryRequest {
        type_url: type_url.to_string(),
        resource_names_subscribe: names.iter().map(|n| n.to_string()).collect(),
        ..Default::default()
    }
}

fn ack(response: &DeltaDiscoveryResponse) -> DeltaDiscoveryRequest {
    DeltaDiscoveryRequest {
        type_url: response.type_url.clone(),
        response_nonce: response.nonce.clone(),
        ..Default::default()
    }
}

fn sent(response: &DeltaDiscoveryResponse) -> Vec<(&str, &str)> {
    response
        .resources
        .iter()
        .map(|r| (r.name.as_str(), r.version.as_str()))
        .collect()
}

fn respond(
    stream: &mut DeltaStream,
    request: DeltaDiscoveryRequest,
    at: &Snapshot,
) -> DeltaDiscoveryResponse {
    stream
        .on_request(request, at)
        .unwrap()
        .response
        .expect("a response")
}

#[test]
fn a_first_wildcard_request_gets_every_resource_with_its_own_version() {
    let at = snapshot(&[cluster("a", "v1"), cluster("b", "v1")]);
    let mut stream = DeltaStream::new();
    let response = respond(&mut stream, subscribe(CLUSTER, &[]), &at);
    let (a, b) = (
        resource_version(&cluster("a", "v1")),
        resource_version(&cluster("b", "v1")),
    );
    assert_eq!(sent(&response), [("a", a.as_str()), ("b", b.as_str())]);
    assert_eq!(response.resources[0].resource, Some(cluster("a", "v1")));
    assert_eq!(response.system_version_info, "1");
    assert!(response.removed_resources.is_empty());
    assert!(stream.types()[CLUSTER].wildcard);
}

#[test]
fn a_first_request_is_answered_even_with_nothing_to_send() {
    let mut stream = DeltaStream::new();
    let response = respond(&mut stream, subscribe(CLUSTER, &[]), &Snapshot::empty());
    assert!(response.resources.is_empty());
    assert!(response.removed_resources.is_empty());
    assert!(!response.nonce.is_empty());
}

#[test]
fn initial_resource_versions_are_not_sent_again() {
    let at = snapshot(&[cluster("a", "v1"), cluster("b", "v2")]);
    let mut stream = DeltaStream::new();
    let request = DeltaDiscoveryRequest {
        initial_resource_versions: [
            ("a".to_string(), resource_version(&cluster("a", "v1"))),
            ("b".to_string(), resource_version(&cluster("b", "v1"))),
            ("gone".to_string(), "x".to_string()),
        ]
        .into(),
        ..subscribe(CLUSTER, &[])
    };
    let response = respond(&mut stream, request, &at);
    let b = resource_version(&cluster("b", "v2"));
    assert_eq!(sent(&response), [("b", b.as_str())]);
    assert_eq!(response.removed_resources, ["gone"]);
}

#[test]
fn a_change_sends_only_the_changed_resource() {
    let at = snapshot(&[cluster("a", "v1"), cluster("b", "v1")]);
    let mut stream = DeltaStream::new();
    respond(&mut stream, subscribe(CLUSTER, &[]), &at);
    let pushed = stream.on_snapshot(&at.next(set(&[cluster("a", "v1"), cluster("b", "v2")])));
    assert_eq!(pushed.len(), 1);
    assert_eq!(pushed[0].resources.len(), 1);
    assert_eq!(pushed[0].resources[0].resource, Some(cluster("b", "v2")));
    assert_eq!(pushed[0].system_version_info, "2");
}

#[test]
fn a_removal_is_sent_in_removed_resources() {
    let at = snapshot(&[cluster("a", "v1"), cluster("b", "v1")]);
    let mut stream = DeltaStream::new();
    respond(&mut stream, subscribe(CLUSTER, &[]), &at);
    let pushed = stream.on_snapshot(&at.next(set(&[cluster("a", "v1")])));
    assert_eq!(pushed.len(), 1);
    assert!(pushed[0].resources.is_empty());
    assert_eq!(pushed[0].removed_resources, ["b"]);
}

#[test]
fn nothing_changed_sends_nothing() {
    let at = snapshot(&[cluster("a", "v1")]);
    let mut stream = DeltaStream::new();
    let response = respond(&mut stream, subscribe(CLUSTER, &[]), &at);
    let step = stream.on_request(ack(&response), &at).unwrap();
    assert!(step.response.is_none());
    // A snapshot that changes another type only.
    assert!(
        stream
            .on_snapshot(&at.next(set(&[cluster("a", "v1"), endpoints("a", 0)])))
            .is_empty()
    );
}

#[test]
fn subscribing_to_a_missing_name_reports_it_removed() {
    let at = snapshot(&[endpoints("a", 0)]);
    let mut stream = DeltaStream::new();
    let response = respond(&mut stream, subscribe(ENDPOINT, &["a", "missing"]), &at);
    assert_eq!(sent(&response).len(), 1);
    assert_eq!(response.removed_resources, ["missing"]);
    assert!(!stream.types()[ENDPOINT].wildcard);

    // It is said once: a later unrelated change does not repeat it.
    assert!(
        stream
            .on_snapshot(&at.next(set(&[endpoints("a", 0), cluster("c", "v1")])))
            .is_empty()
    );
}

#[test]
fn an_unsubscribed_name_is_forgotten_and_sent_again_on_resubscription() {
    let at = snapshot(&[endpoints("a", 0), endpoints("b", 0)]);
    let mut stream = DeltaStream::new();
    let response = respond(&mut stream, subscribe(ENDPOINT, &["a", "b"]), &at);
    assert_eq!(sent(&response).len(), 2);

    let unsubscribe = DeltaDiscoveryRequest {
        resource_names_unsubscribe: vec!["b".to_string()],
        ..ack(&response)
    };
    let step = stream.on_request(unsubscribe, &at).unwrap();
    assert!(step.response.is_none(), "{:?}", step.response);
    assert_eq!(stream.types()[ENDPOINT].names, ["a".to_string()].into());
    // A change to b no longer reaches this client.
    assert!(
        stream
            .on_snapshot(&at.next(set(&[endpoints("a", 0), endpoints("b", 1)])))
            .is_empty()
    );

    let response = respond(&mut stream, subscribe(ENDPOINT, &["b"]), &at);
    assert_eq!(response.resources.len(), 1);
    assert_eq!(response.resources[0].name, "b");
}

#[test]
fn unsubscribing_from_the_wildcard_keeps_only_named_resources() {
    let at = snapshot(&[cluster("a", "v1"), cluster("b", "v1")]);
    let mut stream = DeltaStream::new();
    respond(&mut stream, subscribe(CLUSTER, &["*", "a"]), &at);
    let request = DeltaDiscoveryRequest {
        resource_names_unsubscribe: vec!["*".to_string()],
        ..subscribe(CLUSTER, &[])
    };
    assert!(stream.on_request(request, &at).unwrap().response.is_none());
    let pushed = stream.on_snapshot(&at.next(set(&[cluster("a", "v2"), cluster("b", "v2")])));
    assert_eq!(pushed.len(), 1);
    assert_eq!(sent(&pushed[0]).len(), 1);
    assert_eq!(pushed[0].resources[0].name, "a");
}

#[test]
fn acks_and_nacks_are_recorded_with_the_system_version() {
    let at = snapshot(&[cluster("a", "v1")]);
    let mut stream = DeltaStream::new();
    let first = respond(&mut stream, subscribe(CLUSTER, &[]), &at);
    let step = stream.on_request(ack(&first), &at).unwrap();
    assert_eq!(
        step.feedback,
        Some(Feedback::Ack {
            version: "1".to_string()
        })
    );

    let next = at.next(set(&[cluster("a", "v2")]));
    let pushed = stream.on_snapshot(&next);
    let nack = DeltaDiscoveryRequest {
        error_detail: Some(Status {
            code: 3,
            message: "cluster a: bad".to_string(),
            details: vec![],
        }),
        ..ack(&pushed[0])
    };
    stream.on_request(nack, &next).unwrap();
    let status = &stream.types()[CLUSTER];
    assert_eq!(status.acked_version.as_deref(), Some("1"));
    assert_eq!(status.sent_version.as_deref(), Some("2"));
    assert_eq!(status.last_nack.as_deref(), Some("cluster a: bad"));
    assert_eq!((status.acks, status.nacks, status.responses), (1, 1, 2));
    // The NACKed version is not sent again.
    assert!(stream.on_snapshot(&next).is_empty());
}

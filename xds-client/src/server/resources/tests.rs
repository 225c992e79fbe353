use std::path::PathBuf;

use super::*;
use crate::{
    test_support::{cluster, endpoints},
    type_url,
};

fn file(name: &str, text: &str) -> SourceFile {
    SourceFile {
        path: PathBuf::from(name),
        bytes: text.as_bytes().to_vec(),
    }
}

const TWO_CLUSTERS: &str = r#"
- "@type": type.googleapis.com/envoy.config.cluster.v3.Cluster
  name: a
  connect_timeout: 1s
- "@type": type.googleapis.com/envoy.config.cluster.v3.Cluster
  name: b
"#;

#[test]
fn insert_reads_the_name_from_field_one() {
    let mut resources = Resources::new();
    resources.insert(cluster("backend", "v1")).unwrap();
    resources.insert(endpoints("backend", 0)).unwrap();
    assert!(resources.get(type_url::CLUSTER, "backend").is_some());
    assert!(resources.get(type_url::ENDPOINT, "backend").is_some());
    assert_eq!(resources.len(), 2);
}

#[test]
fn insert_refuses_a_second_resource_with_the_same_name() {
    let mut resources = Resources::new();
    resources.insert(cluster("backend", "v1")).unwrap();
    let err = resources.insert(cluster("backend", "v2")).unwrap_err();
    assert_eq!(
        err,
        InvalidResource::Duplicate {
            type_url: type_url::CLUSTER.to_string(),
            name: "backend".to_string()
        }
    );
    assert_eq!(
        resources.get(type_url::CLUSTER, "backend"),
        Some(&cluster("backend", "v1"))
    );
}

#[test]
fn insert_refuses_a_resource_without_a_name() {
    let err = Resources::new().insert(cluster("", "v1")).unwrap_err();
    assert!(
        matches!(&err, InvalidResource::Unnamed { type_url, reason: None } if type_url == type_url::CLUSTER),
        "{err:?}"
    );
    assert!(err.to_string().contains("Cluster has no name"), "{err}");
}

#[test]
fn removing_the_last_resource_of_a_type_leaves_an_empty_set() {
    let mut resources = Resources::new();
    resources.insert(cluster("a", "v1")).unwrap();
    assert_eq!(
        resources.remove(type_url::CLUSTER, "a"),
        Some(cluster("a", "v1"))
    );
    assert!(resources.is_empty());
    assert_eq!(resources, Resources::new());
}

#[test]
fn resource_version_is_a_fixed_function_of_the_content() {
    // Pinned: a restarted server must give the same versions as the one before it.
    let any = Any {
        type_url: "a".to_string(),
        value: vec![1],
    };
    assert_eq!(resource_version(&any), "a68d6314a28b5822836dbc79783e49ff");
    assert_ne!(
        resource_version(&cluster("a", "v1")),
        resource_version(&cluster("a", "v2"))
    );
}

#[test]
fn a_file_holds_one_resource_or_a_list() {
    let schema = Schema::load();
    let files = [
        file("clusters.yaml", TWO_CLUSTERS),
        file(
            "eds.json",
            r#"{"@type": "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment",
                "cluster_name": "a"}"#,
        ),
    ];
    let resources = parse_files(&files, &schema).unwrap();
    let clusters: Vec<&str> = resources
        .of_type(type_url::CLUSTER)
        .map(|(name, _)| name)
        .collect();
    assert_eq!(clusters, ["a", "b"]);
    assert!(resources.get(type_url::ENDPOINT, "a").is_some());
}

#[test]
fn an_invalid_resource_is_named_by_file_and_path() {
    let schema = Schema::load();
    let text = r#"
- "@type": type.googleapis.com/envoy.config.cluster.v3.Cluster
  name: a
- "@type": type.googleapis.com/envoy.config.cluster.v3.Cluster
  name: b
  connect_timeout: soon
"#;
    let err = parse_files(&[file("clusters.yaml", text)], &schema).unwrap_err();
    let LoadError::Invalid { file, path, .. } = &err else {
        panic!("expected an invalid resource, got {err:?}");
    };
    assert_eq!(file, Path::new("clusters.yaml"));
    assert_eq!(path, "[1].connect_timeout");
    assert!(
        err.to_string()
            .starts_with("clusters.yaml: at [1].connect_timeout: "),
        "{err}"
    );
}

#[test]
fn a_resource_without_type_or_name_is_refused() {
    let schema = Schema::load();
    let err = parse_files(&[file("x.yaml", "name: a\n")], &schema).unwrap_err();
    assert!(err.to_string().contains("@type"), "{err}");

    let unnamed = "\"@type\": type.googleapis.com/envoy.config.cluster.v3.Cluster\n";
    let err = parse_files(&[file("x.yaml", unnamed)], &schema).unwrap_err();
    assert!(err.to_string().contains("has no name"), "{err}");
}

#[test]
fn a_name_defined_twice_names_both_places() {
    let schema = Schema::load();
    let again = "\"@type\": type.googleapis.com/envoy.config.cluster.v3.Cluster\nname: b\n";
    let files = [file("a.yaml", TWO_CLUSTERS), file("b.yaml", again)];
    let err = parse_files(&files, &schema).unwrap_err();
    assert_eq!(
        err.to_string(),
        "b.yaml: a envoy.config.cluster.v3.Cluster named \"b\" is already defined in a.yaml at [1]"
    );
    assert_eq!(err.file(), Some(Path::new("b.yaml")));
}

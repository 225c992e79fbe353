//! The resources a server serves: named by type URL and resource name, loaded from a directory of
//! YAML/JSON files, and versioned one by one.

use std::{
    collections::{BTreeMap, HashMap},
    io,
    path::{Path, PathBuf},
};

use envoy_types::pb::google::protobuf::Any;
use prost::Message;

use crate::{
    schema::{Format, ParseError, Schema},
    type_url::short_name,
};

/// A set of resources: for each type URL, each resource by name.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Resources {
    types: BTreeMap<String, BTreeMap<String, Any>>,
}

/// Why a resource could not be added to a [`Resources`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InvalidResource {
    /// The resource has no name: field 1 (`name`, or `cluster_name` for a
    /// ClusterLoadAssignment) is empty or not a string.
    #[error("the {} has no name (field 1: `name`, or `cluster_name` for a ClusterLoadAssignment){}", short_name(type_url), reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default())]
    Unnamed {
        /// The resource's type URL.
        type_url: String,
        /// Why field 1 could not be read, when it is there but unreadable.
        reason: Option<String>,
    },
    /// Another resource of the same type has the same name.
    #[error("a {} named {name:?} is already defined", short_name(type_url))]
    Duplicate {
        /// The resources' type URL.
        type_url: String,
        /// The name they share.
        name: String,
    },
}

/// Why a directory of resources could not be loaded. Every error names the file, and for a bad
/// resource the path inside the file (`[2].load_assignment.endpoints[0]`).
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The directory could not be listed.
    #[error("could not list the resource directory {}: {source}", dir.display())]
    ReadDir {
        /// The directory.
        dir: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A file could not be read.
    #[error("could not read {}: {source}", file.display())]
    ReadFile {
        /// The file.
        file: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A file does not hold valid resources.
    #[error("{}: {}{problem}", file.display(), at(path))]
    Invalid {
        /// The file.
        file: PathBuf,
        /// Where in the file, as `[1].name`; empty for the whole document.
        path: String,
        /// What is wrong there.
        problem: String,
    },
    /// Two resources of the same type have the same name.
    #[error("{}: {}a {} named {name:?} is already defined in {first_defined}", file.display(), at(path), short_name(type_url))]
    Duplicate {
        /// The file of the second definition.
        file: PathBuf,
        /// Where in it.
        path: String,
        /// The resources' type URL.
        type_url: String,
        /// The name they share.
        name: String,
        /// Where the first definition is, as `clusters.yaml at [1]`.
        first_defined: String,
    },
}

/// One file of a resource directory, as read from disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SourceFile {
    pub(crate) path: PathBuf,
    pub(crate) bytes: Vec<u8>,
}

/// The resources being served, at one version, with each resource's own version computed once.
#[derive(Debug)]
pub(crate) struct Snapshot {
    counter: u64,
    version: String,
    resources: Resources,
    /// Type URL → name → [`resource_version`].
    versions: BTreeMap<String, BTreeMap<String, String>>,
}

/// The part of every Envoy v3 resource that names it: a string in field 1. See
/// [`crate::envelope`] for the list of types this holds for.
#[derive(Clone, PartialEq, Message)]
struct Named {
    #[prost(string, tag = "1")]
    name: String,
}

// === impl Resources ===

impl Resources {
    /// No resources.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a resource under its type URL and its name, read from field 1 of the message (`name`
    /// for a Listener, Cluster, RouteConfiguration or Secret, `cluster_name` for a
    /// ClusterLoadAssignment).
    pub fn insert(&mut self, any: Any) -> Result<(), InvalidResource> {
        let name = resource_name(&any)?;
        let of_type = self.types.entry(any.type_url.clone()).or_default();
        if of_type.contains_key(&name) {
            return Err(InvalidResource::Duplicate {
                type_url: any.type_url,
                name,
            });
        }
        of_type.insert(name, any);
        Ok(())
    }

    /// Removes a resource, returning it if it was there.
    pub fn remove(&mut self, type_url: &str, name: &str) -> Option<Any> {
        let of_type = self.types.get_mut(type_url)?;
        let removed = of_type.remove(name);
        if of_type.is_empty() {
            self.types.remove(type_url);
        }
        removed
    }

    /// A resource by type URL and name.
    pub fn get(&self, type_url: &str, name: &str) -> Option<&Any> {
        self.types.get(type_url)?.get(name)
    }

    /// The resources of one type, by name.
    pub fn of_type(&self, type_url: &str) -> impl Iterator<Item = (&str, &Any)> {
        self.types
            .get(type_url)
            .into_iter()
            .flatten()
            .map(|(name, any)| (name.as_str(), any))
    }

    /// Every resource as (type URL, name, resource), by type URL then name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str, &Any)> {
        self.types.iter().flat_map(|(type_url, of_type)| {
            of_type
                .iter()
                .map(move |(name, any)| (type_url.as_str(), name.as_str(), any))
        })
    }

    /// How many resources there are, of every type.
    pub fn len(&self) -> usize {
        self.types.values().map(BTreeMap::len).sum()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.types.is_empty()
    }

    /// Loads every resource file of `dir`: the files whose names end in `.yaml`, `.yml` or
    /// `.json`, in name order, skipping hidden ones (names starting with `.`, as editors' swap
    /// files do). Each holds one resource or a list of them, in the proto3 JSON mapping with the
    /// type in `@type`:
    ///
    /// ```yaml
    /// - "@type": type.googleapis.com/envoy.config.cluster.v3.Cluster
    ///   name: backend
    ///   connect_timeout: 1s
    /// ```
    ///
    /// Two resources of the same type with the same name are an error, even in different files.
    pub fn load_dir(dir: &Path, schema: &Schema) -> Result<Self, LoadError> {
        parse_files(&read_dir(dir)?, schema)
    }
}

// === impl LoadError ===

impl LoadError {
    /// The file at fault, or `None` when the directory itself could not be listed.
    pub fn file(&self) -> Option<&Path> {
        match self {
            Self::ReadDir { .. } => None,
            Self::ReadFile { file, .. }
            | Self::Invalid { file, .. }
            | Self::Duplicate { file, .. } => Some(file),
        }
    }
}

// === impl Snapshot ===

impl Snapshot {
    /// No resources, at version `"0"`.
    pub(crate) fn empty() -> Self {
        Self::new(0, Resources::new())
    }

    fn new(counter: u64, resources: Resources) -> Self {
        let versions = resources
            .types
            .iter()
            .map(|(type_url, of_type)| {
                let versions = of_type
                    .iter()
                    .map(|(name, any)| (name.clone(), resource_version(any)))
                    .collect();
                (type_url.clone(), versions)
            })
            .collect();
        Self {
            counter,
            version: counter.to_string(),
            resources,
            versions,
        }
    }

    /// `resources` at the next version.
    pub(crate) fn next(&self, resources: Resources) -> Self {
        Self::new(self.counter + 1, resources)
    }

    /// The version of the whole set.
    pub(crate) fn version(&self) -> &str {
        &self.version
    }

    pub(crate) fn resources(&self) -> &Resources {
        &self.resources
    }

    /// A resource by name, as (name, resource, own version).
    pub(crate) fn get(&self, type_url: &str, name: &str) -> Option<(&str, &Any, &str)> {
        let (name, any) = self.resources.types.get(type_url)?.get_key_value(name)?;
        let version = self.versions.get(type_url)?.get(name)?;
        Some((name, any, version))
    }

    /// The resources of one type, by name, with their own versions.
    pub(crate) fn of_type(&self, type_url: &str) -> impl Iterator<Item = (&str, &Any, &str)> {
        self.resources
            .of_type(type_url)
            .filter_map(move |(name, any)| {
                let version = self.versions.get(type_url)?.get(name)?;
                Some((name, any, version.as_str()))
            })
    }
}

/// The version of one resource, as delta responses carry it: the FNV-1a 128-bit hash of its type
/// URL and its encoded message, in hex.
///
/// It depends on the content only, so it is the same in every server process (a client that
/// reconnects to a restarted server with `initial_resource_versions` is not sent what it has).
/// FNV is not a cryptographic hash, which a test server does not need; it is small enough to
/// write here rather than take a dependency for.
pub fn resource_version(any: &Any) -> String {
    const OFFSET_BASIS: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
    const PRIME: u128 = 0x0000_0000_0100_0000_0000_0000_0000_013b;
    let mut hash = OFFSET_BASIS;
    // The zero byte keeps "ab" + "c" apart from "a" + "bc"; a type URL never contains one.
    for byte in any
        .type_url
        .bytes()
        .chain([0])
        .chain(any.value.iter().copied())
    {
        hash ^= u128::from(byte);
        hash = hash.wrapping_mul(PRIME);
    }
    format!("{hash:032x}")
}

/// Reads a resource's name from field 1.
pub(crate) fn resource_name(any: &Any) -> Result<String, InvalidResource> {
    let unnamed = |reason| InvalidResource::Unnamed {
        type_url: any.type_url.clone(),
        reason,
    };
    let named = Named::decode(any.value.as_slice()).map_err(|e| unnamed(Some(e.to_string())))?;
    if named.name.is_empty() {
        return Err(unnamed(None));
    }
    Ok(named.name)
}

/// Reads the resource files of `dir` (see [`Resources::load_dir`]), in name order.
pub(crate) fn read_dir(dir: &Path) -> Result<Vec<SourceFile>, LoadError> {
    let read_dir_error = |source| LoadError::ReadDir {
        dir: dir.to_path_buf(),
        source,
    };
    let mut paths = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(read_dir_error)? {
        let entry = entry.map_err(read_dir_error)?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            continue;
        };
        let is_resource_file = [".yaml", ".yml", ".json"]
            .iter()
            .any(|ext| name.len() > ext.len() && name.to_ascii_lowercase().ends_with(ext));
        if name.starts_with('.') || !is_resource_file {
            continue;
        }
        // Follows symbolic links, as a Kubernetes ConfigMap mount is made of them.
        let path = entry.path();
        if std::fs::metadata(&path).is_ok_and(|m| m.is_file()) {
            paths.push(path);
        }
    }
    paths.sort();
    paths
        .into_iter()
        .map(|path| match std::fs::read(&path) {
            Ok(bytes) => Ok(SourceFile { path, bytes }),
            Err(source) => Err(LoadError::ReadFile { file: path, source }),
        })
        .collect()
}

/// Parses resource files read by [`read_dir`].
pub(crate) fn parse_files(files: &[SourceFile], schema: &Schema) -> Result<Resources, LoadError> {
    let mut resources = Resources::new();
    // (type URL, name) → where it was first defined, to say so in a duplicate's error.
    let mut defined: HashMap<(String, String), (&Path, String)> = HashMap::new();
    for file in files {
        let invalid = |path: String, problem: String| LoadError::Invalid {
            file: file.path.clone(),
            path,
            problem,
        };
        let text = std::str::from_utf8(&file.bytes)
            .map_err(|e| invalid(String::new(), format!("the file is not UTF-8: {e}")))?;
        let document = Format::for_path(&file.path)
            .read(text)
            .map_err(|ParseError { path, problem }| invalid(path, problem))?;
        let entries = match document {
            serde_json::Value::Array(items) => items
                .into_iter()
                .enumerate()
                .map(|(i, item)| (format!("[{i}]"), item))
                .collect(),
            single => vec![(String::new(), single)],
        };
        for (prefix, value) in entries {
            let any = schema
                .parse_any(value)
                .map_err(|e| invalid(join_path(&prefix, &e.path), e.problem))?;
            let name = resource_name(&any).map_err(|e| invalid(prefix.clone(), e.to_string()))?;
            let key = (any.type_url.clone(), name);
            if let Some((first_file, first_path)) = defined.get(&key) {
                let (type_url, name) = key;
                return Err(LoadError::Duplicate {
                    file: file.path.clone(),
                    path: prefix,
                    type_url,
                    name,
                    first_defined: format!(
                        "{} at {}",
                        first_file.display(),
                        display_path(first_path)
                    ),
                });
            }
            resources
                .insert(any)
                .map_err(|e| invalid(prefix.clone(), e.to_string()))?;
            defined.insert(key, (&file.path, prefix));
        }
    }
    Ok(resources)
}

/// `[2]` and `a.b` make `[2].a.b`; `[2]` and `[0].c` make `[2][0].c`.
fn join_path(prefix: &str, inner: &str) -> String {
    let mut path = prefix.to_string();
    if !path.is_empty() && !inner.is_empty() && !inner.starts_with('[') {
        path.push('.');
    }
    path.push_str(inner);
    path
}

/// `"at [1].name: "` for an error message, or nothing for the whole document.
fn at(path: &str) -> String {
    if path.is_empty() {
        String::new()
    } else {
        format!("at {path}: ")
    }
}

/// A path inside a file for a message: `[1]`, or "the top level" for the whole document.
fn display_path(path: &str) -> &str {
    if path.is_empty() {
        "the top level"
    } else {
        path
    }
}

#[cfg(test)]
mod tests;

//! With the `schema` feature: builds the descriptor set that [`schema`](src/schema.rs) reads
//! YAML/JSON with (the proto3 JSON mapping, `Any` resolved by `@type`).
//!
//! - The Envoy API comes from the descriptor set shipped inside the `envoy-types` crate, the one
//!   its Rust types were generated from, so the dynamic (JSON) view and the typed (prost) view of
//!   a message can never disagree. Only the files Skiff reads are kept (the roots below and
//!   everything they import), without source comments: the whole API is 514 files, and decoding
//!   it costs several MB of memory each time.
//! - The messages istiod sends that `envoy-types` lacks (Istio's own extension configs, the xDS
//!   IP matcher, `TypedStruct`) are written in `proto/` and compiled here with `protox`.
//! - So is Istio's CA service (`proto/istio/v1/auth/ca.proto`), whose Rust types are written by
//!   hand in `src/ca/proto.rs` (no code is generated); a test compares the two.

use std::{env, fs, path::PathBuf, process::Command};

use prost::Message;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if env::var_os("CARGO_FEATURE_SCHEMA").is_none() {
        return;
    }
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let types_bin = envoy_types_dir().join("src/generated/types.bin");
    println!("cargo:rerun-if-changed={}", types_bin.display());
    println!("cargo:rerun-if-changed=proto");

    let raw =
        fs::read(&types_bin).unwrap_or_else(|e| panic!("reading {}: {e}", types_bin.display()));
    let mut set = prost_types::FileDescriptorSet::decode(raw.as_slice())
        .unwrap_or_else(|e| panic!("decoding {}: {e}", types_bin.display()));
    let keep = closure(&set, ROOT_FILES);
    set.file.retain(|f| keep.contains(f.name()));
    set.file.extend(compile_own_protos(types_bin_set(&raw)));
    for file in &mut set.file {
        file.source_code_info = None;
    }
    fs::write(out.join("envoy_descriptor_set.bin"), set.encode_to_vec())
        .expect("writing the descriptor set to OUT_DIR");
}

/// The proto files whose messages Skiff reads from YAML/JSON or writes as JSON. An extension
/// Skiff accepts must be listed here, or a bootstrap using it cannot be parsed; the
/// `schema_knows_every_accepted_type` test checks that.
const ROOT_FILES: &[&str] = &[
    // Bootstrap, xDS, admin.
    "envoy/config/bootstrap/v3/bootstrap.proto",
    "envoy/service/discovery/v3/ads.proto",
    "envoy/admin/v3/config_dump.proto",
    "envoy/admin/v3/listeners.proto",
    // Listener filters.
    "envoy/extensions/filters/listener/original_dst/v3/original_dst.proto",
    "envoy/extensions/filters/listener/tls_inspector/v3/tls_inspector.proto",
    "envoy/extensions/filters/listener/http_inspector/v3/http_inspector.proto",
    // Network filters.
    "envoy/extensions/filters/network/tcp_proxy/v3/tcp_proxy.proto",
    "envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager.proto",
    "envoy/extensions/filters/network/rbac/v3/rbac.proto",
    "envoy/extensions/filters/network/set_filter_state/v3/set_filter_state.proto",
    "envoy/extensions/filters/network/wasm/v3/wasm.proto",
    // HTTP filters.
    "envoy/extensions/filters/http/router/v3/router.proto",
    "envoy/extensions/filters/http/cors/v3/cors.proto",
    "envoy/extensions/filters/http/fault/v3/fault.proto",
    "envoy/extensions/filters/http/grpc_stats/v3/config.proto",
    // Retry host predicates on routes (istiod sets previous_hosts).
    "envoy/extensions/retry/host/previous_hosts/v3/previous_hosts.proto",
    "envoy/extensions/filters/http/rbac/v3/rbac.proto",
    "envoy/extensions/filters/http/ext_authz/v3/ext_authz.proto",
    "envoy/extensions/filters/http/wasm/v3/wasm.proto",
    "envoy/extensions/filters/http/set_filter_state/v3/set_filter_state.proto",
    // Upstreams, transport sockets, access logs, request ids, matching inputs.
    "envoy/extensions/upstreams/http/v3/http_protocol_options.proto",
    "envoy/extensions/upstreams/tcp/v3/tcp_protocol_options.proto",
    "envoy/extensions/transport_sockets/tls/v3/tls.proto",
    "envoy/extensions/transport_sockets/raw_buffer/v3/raw_buffer.proto",
    "envoy/extensions/transport_sockets/internal_upstream/v3/internal_upstream.proto",
    "envoy/extensions/access_loggers/file/v3/file.proto",
    "envoy/extensions/access_loggers/stream/v3/stream.proto",
    "envoy/extensions/request_id/uuid/v3/uuid.proto",
    "envoy/extensions/matching/common_inputs/network/v3/network_inputs.proto",
];

/// Compiles every `.proto` under `proto/`, resolving imports of Envoy and xDS files from the
/// `envoy-types` descriptor set; returns only the files compiled here.
fn compile_own_protos(
    envoy: prost_types::FileDescriptorSet,
) -> Vec<prost_types::FileDescriptorProto> {
    let root =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets it")).join("proto");
    let mut files = Vec::new();
    collect_protos(&root, &root, &mut files);
    files.sort();
    let mut resolver = protox::file::ChainFileResolver::new();
    resolver.add(protox::file::IncludeFileResolver::new(root.clone()));
    resolver.add(protox::file::DescriptorSetFileResolver::new(envoy));
    resolver.add(protox::file::GoogleFileResolver::new());
    let mut compiler = protox::Compiler::with_file_resolver(resolver);
    compiler.include_imports(false).include_source_info(false);
    compiler
        .open_files(&files)
        .unwrap_or_else(|e| panic!("compiling the protos in {}: {e:?}", root.display()));
    compiler.file_descriptor_set().file
}

/// Every `.proto` file under `dir` (which is `root` or below it).
fn collect_protos(root: &std::path::Path, dir: &std::path::Path, out: &mut Vec<String>) {
    let entries = fs::read_dir(dir).unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            collect_protos(root, &path, out);
        } else if path.extension().is_some_and(|e| e == "proto") {
            debug_assert!(path.starts_with(root));
            out.push(path.to_string_lossy().into_owned());
        }
    }
}

fn types_bin_set(raw: &[u8]) -> prost_types::FileDescriptorSet {
    prost_types::FileDescriptorSet::decode(raw).expect("decoded once already")
}

/// `roots` and every file they import, transitively.
fn closure(
    set: &prost_types::FileDescriptorSet,
    roots: &[&str],
) -> std::collections::HashSet<String> {
    let by_name: std::collections::HashMap<&str, &prost_types::FileDescriptorProto> =
        set.file.iter().map(|f| (f.name(), f)).collect();
    let mut keep = std::collections::HashSet::new();
    let mut todo: Vec<String> = roots.iter().map(|r| r.to_string()).collect();
    while let Some(name) = todo.pop() {
        let file = by_name
            .get(name.as_str())
            .unwrap_or_else(|| panic!("{name} is not in the envoy-types descriptor set"));
        if keep.insert(name) {
            todo.extend(file.dependency.iter().cloned());
        }
    }
    keep
}

/// Where cargo unpacked the `envoy-types` package. In order:
/// 1. `SKIFF_ENVOY_TYPES_DIR`, for unusual setups (vendored or git sources);
/// 2. the registry cache, `$CARGO_HOME/registry/src/*/envoy-types-<version from Cargo.lock>`;
/// 3. `cargo metadata`, which knows every source kind but may need to resolve the whole workspace.
fn envoy_types_dir() -> PathBuf {
    println!("cargo:rerun-if-env-changed=SKIFF_ENVOY_TYPES_DIR");
    if let Some(dir) = env::var_os("SKIFF_ENVOY_TYPES_DIR") {
        return PathBuf::from(dir);
    }
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    if let Some(dir) = from_registry(&manifest_dir) {
        return dir;
    }
    from_cargo_metadata(&manifest_dir)
}

fn from_registry(manifest_dir: &std::path::Path) -> Option<PathBuf> {
    let lock = manifest_dir.parent()?.join("Cargo.lock");
    let text = fs::read_to_string(lock).ok()?;
    let version = text
        .split("[[package]]")
        .find(|p| p.contains("name = \"envoy-types\""))?
        .lines()
        .find_map(|l| l.strip_prefix("version = \""))?
        .trim_end_matches('"')
        .to_string();
    let cargo_home = env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))?;
    fs::read_dir(cargo_home.join("registry/src"))
        .ok()?
        .filter_map(Result::ok)
        .map(|index| index.path().join(format!("envoy-types-{version}")))
        .find(|dir| dir.join("src/generated/types.bin").is_file())
}

fn from_cargo_metadata(manifest_dir: &std::path::Path) -> PathBuf {
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = Command::new(cargo)
        .args(["metadata", "--format-version", "1"])
        .current_dir(manifest_dir)
        .output()
        .expect("running `cargo metadata` to locate envoy-types");
    assert!(
        output.status.success(),
        "cannot locate the envoy-types sources (set SKIFF_ENVOY_TYPES_DIR): `cargo metadata` failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let meta: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("parsing `cargo metadata` output");
    let manifest = meta["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["name"] == "envoy-types")
        .and_then(|p| p["manifest_path"].as_str())
        .expect("envoy-types is a dependency of the proxy");
    PathBuf::from(manifest)
        .parent()
        .expect("a manifest path has a parent")
        .to_path_buf()
}

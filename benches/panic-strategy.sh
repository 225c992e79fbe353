#!/usr/bin/env bash
# Measures panic = "unwind" against panic = "abort" for the release proxy: binary size, and
# requests per second through a tcp_proxy listener in front of a real nginx, both with
# keep-alive (the copy path) and with a new connection per request (accept, connect, inspect).
#
# Usage: benches/panic-strategy.sh
# Builds both variants (the abort one in target/panic-abort), pins the proxy to CPU 0 and wrk
# to CPU 1, alternates the variants over several rounds and prints medians and ratios.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps nginx python3
command -v wrk >/dev/null || { echo "needs wrk (apt-get install wrk)" >&2; exit 1; }
rounds=${ROUNDS:-5}
seconds=${SECONDS_PER_RUN:-8}

# UNWIND_BIN / ABORT_BIN skip the builds when both binaries already exist.
unwind=${UNWIND_BIN:-target/release/proxy}
abort=${ABORT_BIN:-target/panic-abort/release/proxy}
if [ -z "${UNWIND_BIN:-}" ]; then cargo build --release --locked -p proxy; fi
if [ -z "${ABORT_BIN:-}" ]; then
  CARGO_PROFILE_RELEASE_PANIC=abort cargo build --release --locked -p proxy --target-dir target/panic-abort
fi

work=$(mktemp -d); pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"' EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

mkdir -p "$work/www"; head -c 1024 /dev/zero | tr '\0' x > "$work/www/1k"
nport=$(free_port)
cat > "$work/nginx.conf" <<CONF
daemon off; master_process off; worker_processes 1; pid $work/nginx.pid; error_log $work/nginx.err;
events { worker_connections 1024; }
http { access_log off; keepalive_requests 1000000;
  client_body_temp_path $work/b; proxy_temp_path $work/p; fastcgi_temp_path $work/f; uwsgi_temp_path $work/u; scgi_temp_path $work/s;
  server { listen 127.0.0.1:$nport; root $work/www; } }
CONF
taskset -c 1 "$(command -v nginx || echo /usr/sbin/nginx)" -c "$work/nginx.conf" -p "$work" & pids+=($!)
sleep 0.5

run_variant() { # binary mode -> prints req/s
  local bin=$1 mode=$2 pport; pport=$(free_port)
  cat > "$work/p.yaml" <<YAML
static_resources:
  listeners:
  - name: l
    address: {socket_address: {address: 127.0.0.1, port_value: $pport}}
    filter_chains:
    - filters: [{name: t, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy, stat_prefix: s, cluster: n}}]
  clusters:
  - name: n
    load_assignment: {cluster_name: n, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: $nport}}}}]}]}
YAML
  taskset -c 0 "$bin" -c "$work/p.yaml" --concurrency 1 -l error & local pid=$!
  sleep 0.3
  local hdr=()
  [ "$mode" = close ] && hdr=(-H "Connection: close")
  taskset -c 1 wrk -t1 -c16 -d"${seconds}s" "${hdr[@]}" "http://127.0.0.1:$pport/1k" 2>/dev/null \
    | awk '/Requests\/sec/ {print $2}'
  kill "$pid"; wait "$pid" 2>/dev/null || true
}

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
for mode in keepalive close; do
  : > "$work/u.$mode"; : > "$work/a.$mode"
  for _ in $(seq "$rounds"); do
    run_variant "$unwind" "$mode" >> "$work/u.$mode"
    run_variant "$abort" "$mode" >> "$work/a.$mode"
  done
done

printf '\n%-28s %14s %14s %8s\n' "" "unwind" "abort" "abort/unwind"
su=$(stat -c %s "$unwind"); sa=$(stat -c %s "$abort")
printf '%-28s %14s %14s %8.3f\n' "binary size (bytes)" "$su" "$sa" "$(awk -v a="$sa" -v b="$su" 'BEGIN {print a/b}')"
for mode in keepalive close; do
  u=$(median < "$work/u.$mode"); a=$(median < "$work/a.$mode")
  printf '%-28s %14s %14s %8.3f\n' "req/s, $mode (median of $rounds)" "$u" "$a" "$(awk -v a="$a" -v b="$u" 'BEGIN {print a/b}')"
done

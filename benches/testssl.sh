#!/usr/bin/env bash
# testssl.sh against Skiff's TLS termination, set up as istiod sets up an inbound mTLS chain:
#   - DownstreamTlsContext with require_client_certificate: true;
#   - TLS 1.2 to 1.3, istiod's default cipher list (ECDHE-ECDSA-AES256-GCM-SHA384,
#     ECDHE-RSA-AES256-GCM-SHA384, ECDHE-ECDSA-AES128-GCM-SHA256, ECDHE-RSA-AES128-GCM-SHA256,
#     AES256-GCM-SHA384, AES128-GCM-SHA256), ALPN h2 and http/1.1;
#   - the SDS secrets `default` and `ROOTCA`, served from `proxy dev-ca` certificates (ECDSA
#     P-256, Istio's layout) through --cert-dir;
#   - an HTTP connection manager answering every request with a direct_response.
#
# testssl.sh has no client certificate to offer (3.0 has no --mtls), so against the mTLS
# listener it sees the server's hello and then the certificate_required / handshake_failure
# alert. It still enumerates protocols and ciphers there (from the ServerHello), but the checks
# that need a finished handshake (renegotiation, HTTP-level ones, the server's certificate
# details) cannot run. The script therefore also runs it against a second listener that is
# identical except `require_client_certificate: false`, and applies the same verdicts to both.
#
# Fails (exit 1) when either listener offers SSLv2, SSLv3, TLS 1.0 or TLS 1.1; offers a NULL,
# aNULL, EXPORT, LOW (DES, RC4), 3DES/IDEA or obsolete CBC cipher; when secure renegotiation
# (RFC 5746) or client-initiated renegotiation is not reported OK on the listener without client
# authentication; or when testssl.sh rates any finding HIGH or CRITICAL.
#
# Usage: benches/testssl.sh [--debug] [--no-build]
#   --debug     use target/debug/proxy instead of target/release/proxy
#   --no-build  use the binary as it is (default: cargo build it first)
# Output: the plain text and flat JSON reports are copied to $OUT (default target/testssl/).
# Needs: testssl.sh (apt package `testssl.sh`; installed when missing), python3.
set -euo pipefail
cd "$(dirname "$0")/.."

profile=release
build=1
for arg in "$@"; do
  case "$arg" in
    --debug) profile=debug ;;
    --no-build) build=0 ;;
    *) echo "usage: $0 [--debug] [--no-build]" >&2; exit 2 ;;
  esac
done
OUT=${OUT:-$PWD/target/testssl}

# --- tools ------------------------------------------------------------------------------
testssl=$(command -v testssl.sh || command -v testssl || true)
if [ -z "$testssl" ]; then
  sudo=""; [ "$(id -u)" -ne 0 ] && sudo=sudo
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq testssl.sh >/dev/null
  testssl=$(command -v testssl.sh || command -v testssl)
fi
if [ "$build" = 1 ]; then
  if [ "$profile" = release ]; then
    cargo build --release --locked -p proxy >&2
  else
    cargo build --locked -p proxy >&2
  fi
fi
skiff_bin=$PWD/target/$profile/proxy
[ -x "$skiff_bin" ] || { echo "$skiff_bin is missing (run without --no-build)" >&2; exit 1; }

work=$(mktemp -d); pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 200); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.05; done; return 1; }

# --- certificates and Skiff ---------------------------------------------------------------
"$skiff_bin" dev-ca --dir "$work/ca" server=spiffe://cluster.local/ns/bench/sa/server >/dev/null
mtls_port=$(free_port); tls_port=$(free_port)

# One listener; `require` is the only difference between the two.
listener() { # name port require_client_certificate
  cat <<YAML
  - name: $1
    address: {socket_address: {address: 127.0.0.1, port_value: $2}}
    filter_chains:
    - transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          require_client_certificate: $3
          common_tls_context:
            tls_params:
              tls_minimum_protocol_version: TLSv1_2
              tls_maximum_protocol_version: TLSv1_3
              cipher_suites: [ECDHE-ECDSA-AES256-GCM-SHA384, ECDHE-RSA-AES256-GCM-SHA384, ECDHE-ECDSA-AES128-GCM-SHA256, ECDHE-RSA-AES128-GCM-SHA256, AES256-GCM-SHA384, AES128-GCM-SHA256]
            alpn_protocols: [h2, http/1.1]
            tls_certificate_sds_secret_configs: [$SDS_DEFAULT]
            combined_validation_context:
              default_validation_context:
                match_typed_subject_alt_names: [{san_type: URI, matcher: {prefix: "spiffe://cluster.local/"}}]
              validation_context_sds_secret_config: $SDS_ROOTCA
      filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: $1
          route_config:
            name: $1
            virtual_hosts:
            - {name: all, domains: ["*"], routes: [{match: {prefix: /}, direct_response: {status: 200, body: {inline_string: "skiff\n"}}}]}
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}
YAML
}
# istiod's shape: the secrets come over SDS from the agent (`sds-grpc`); --cert-dir serves them.
sds() { echo "{name: $1, sds_config: {api_config_source: {api_type: GRPC, grpc_services: [{envoy_grpc: {cluster_name: sds-grpc}}], set_node_on_first_message_only: true, transport_api_version: V3}, initial_fetch_timeout: 0s, resource_api_version: V3}}"; }
SDS_DEFAULT=$(sds default); SDS_ROOTCA=$(sds ROOTCA)
{
  echo "admin: {address: {socket_address: {address: 127.0.0.1, port_value: 0}}}"
  echo "static_resources:"
  echo "  listeners:"
  listener mtls "$mtls_port" true
  listener tls "$tls_port" false
} > "$work/bootstrap.yaml"

"$skiff_bin" -c "$work/bootstrap.yaml" --cert-dir "$work/ca/server" --concurrency 1 \
  --log-level error > "$work/skiff.log" 2>&1 & pids+=($!)
if ! wait_port "$mtls_port" || ! wait_port "$tls_port"; then
  cat "$work/skiff.log" >&2; echo "Skiff did not start" >&2; exit 1
fi

# --- testssl.sh -----------------------------------------------------------------------------
# Protocols, the standard cipher categories, every cipher per protocol, the server's
# preferences, and every vulnerability check (renegotiation included).
mkdir -p "$OUT"
run_testssl() { # name port
  local name=$1 port=$2
  rm -f "$OUT/$name.json" "$OUT/$name.txt"
  # testssl.sh exits non-zero when it finds anything to warn about; the verdicts below decide.
  "$testssl" --quiet --color 0 --warnings off --openssl-timeout 10 \
    --jsonfile "$OUT/$name.json" --logfile "$OUT/$name.txt" \
    -p -s -E -P -U "127.0.0.1:$port" >/dev/null 2>&1 || true
  [ -s "$OUT/$name.json" ] || { echo "testssl.sh wrote no report for $name" >&2; exit 1; }
}
echo "testssl.sh $("$testssl" --version 2>/dev/null | grep -o 'testssl *[0-9.a-z+~-]*' | head -1) against Skiff ($profile)" >&2
run_testssl mtls "$mtls_port"
run_testssl tls "$tls_port"

# --- verdicts -------------------------------------------------------------------------------
python3 - "$OUT/mtls.json" "$OUT/tls.json" <<'PY'
import json, sys

# Must be "not offered".
PROTOCOLS = ["SSLv2", "SSLv3", "TLS1", "TLS1_1"]
CIPHER_CLASSES = ["cipherlist_NULL", "cipherlist_aNULL", "cipherlist_EXPORT", "cipherlist_LOW",
                  "cipherlist_3DES_IDEA", "cipherlist_AVERAGE", "cipherlist_OBSOLETED"]
# Must be rated OK where the handshake can finish (the listener without client certificates).
RENEGOTIATION = ["secure_renego", "secure_client_renego"]
WEAK = ("NULL", "EXPORT", "RC4", "DES", "IDEA", "MD5", "anon", "ADH", "AECDH", "CBC")

failures = []
for path in sys.argv[1:]:
    name = path.rsplit("/", 1)[-1].removesuffix(".json")
    findings = json.load(open(path))
    by_id = {}
    for f in findings:
        by_id.setdefault(f["id"], f)

    def show(i):
        f = by_id.get(i)
        return f"{f['severity']:8} {f['finding']}" if f else "(not reported)"

    def must_not_offer(i):
        f = by_id.get(i)
        if f is None:
            failures.append(f"{name}: testssl.sh reported nothing for {i}")
        elif not f["finding"].startswith("not offered"):
            failures.append(f"{name}: {i} is offered: {f['finding']}")

    print(f"\n== {name} listener (require_client_certificate: {'true' if name == 'mtls' else 'false'})")
    for i in ["SSLv2", "SSLv3", "TLS1", "TLS1_1", "TLS1_2", "TLS1_3", "ALPN_HTTP2", "ALPN"]:
        print(f"  {i:22} {show(i)}")
    for i in PROTOCOLS:
        must_not_offer(i)
    for i in CIPHER_CLASSES + ["cipherlist_STRONG"]:
        if i in by_id:
            print(f"  {i:22} {show(i)}")
    for i in CIPHER_CLASSES:
        # 3.0 calls the obsolete CBC class AVERAGE, 3.1 OBSOLETED: one of them must be there.
        if i == "cipherlist_OBSOLETED" and "cipherlist_AVERAGE" in by_id:
            continue
        if i == "cipherlist_AVERAGE" and "cipherlist_OBSOLETED" in by_id:
            continue
        must_not_offer(i)
    ciphers = [f for f in findings if f["id"].startswith("cipher-tls") or f["id"].startswith("cipher-ssl")]
    if not ciphers:
        failures.append(f"{name}: testssl.sh listed no cipher at all")
    for f in ciphers:
        print(f"  {f['id']:22} {' '.join(f['finding'].split())}")
        if f["id"].startswith("cipher-ssl") or any(w in f["finding"] for w in WEAK):
            failures.append(f"{name}: weak cipher offered: {f['finding']}")
    for i in RENEGOTIATION:
        print(f"  {i:22} {show(i)}")
    if name == "tls":
        for i in RENEGOTIATION:
            if by_id.get(i, {}).get("severity") != "OK":
                failures.append(f"{name}: {i} is not OK: {show(i)}")
    for f in findings:
        if f["severity"] in ("HIGH", "CRITICAL"):
            failures.append(f"{name}: {f['id']} rated {f['severity']}: {f['finding']}")
    vulns = ["heartbleed", "CCS", "ticketbleed", "ROBOT", "CRIME_TLS", "BREACH", "POODLE_SSL",
             "fallback_SCSV", "SWEET32", "FREAK", "DROWN", "LOGJAM", "BEAST", "LUCKY13", "RC4"]
    print("  vulnerabilities:      " + ", ".join(
        f"{v}={by_id[v]['severity']}" for v in vulns if v in by_id))

if failures:
    print("\nFAIL:")
    for f in failures:
        print("  " + f)
    sys.exit(1)
print("\nPASS: no legacy protocol or weak cipher offered; renegotiation OK")
PY

#!/usr/bin/env bash
# Soak test: mixed traffic through the release gateway on loopback for a bounded time, with a
# policy reload every 30 s, sampling RSS, open fds and p99 latency each minute.
#
#   bash benches/soak.sh [minutes, default 30] [client threads, default 8]
#
# Traffic (benches/soak/driver.py): valid and invalid API keys, bearer tokens issued by the
# gateway's token service and some revoked, responses holding card numbers (which must come
# back masked), unroutable and ambiguous paths. Every answer is checked against what it must
# be; the report (benches/results/soak-<time>.md) gives the per-minute samples, the RSS slope
# and the count of unexpected answers. Needs nginx (installed when missing) and a release build.
set -euo pipefail
cd "$(dirname "$0")/.."
MINUTES=${1:-30}
THREADS=${2:-8}
BIN=${PORTCULLIS_BIN:-target/release/portcullis}
command -v nginx >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light; }
[ -x "$BIN" ] || cargo build --release -p portcullis

WORK=$(mktemp -d)
chmod 755 "$WORK"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; sleep 0.3; rm -rf "$WORK"; }
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
BACKEND=$(port); GW=$(port); ADMIN=$(port)

printf '{"holder":"A. Person","card":"4111111111111111","order":"ORD-1"}' > "$WORK/card.json"
cat > "$WORK/nginx.conf" <<CONF
worker_processes 1; daemon off; pid $WORK/nginx.pid; error_log $WORK/nginx.err;
events { worker_connections 4096; }
http { access_log off;
  server { listen 127.0.0.1:$BACKEND; keepalive_requests 1000000;
    location = /cards/1 { default_type application/json; alias $WORK/card.json; }
    location / { default_type application/json; return 200 '{"ok":true}'; } } }
CONF
nginx -c "$WORK/nginx.conf" -p "$WORK" & PIDS+=($!)

echo -n soak-admin-token > "$WORK/admin-token"
echo -n soak-app-secret > "$WORK/app.secret"
cp fixtures/oauth/gateway-es256-2026b.pem "$WORK/signing.pem"
cat > "$WORK/soak.yaml" <<CONF
listen: 127.0.0.1:$GW
workers: 1
access_log: off
admin: {listen: 127.0.0.1:$ADMIN, token: admin}
secrets:
  admin: {file: admin-token}
  app: {file: app.secret}
state: sqlite://soak.db
client_limits: {max_connections_per_ip: 4096}
token_service:
  issuer: https://soak.test
  signing_keys: [{kid: k, file: signing.pem}]
  clients: [{id: app, secret: app, scopes: [orders.read], token_format: opaque}]
services:
  - name: keyed
    match: {path: /keyed}
    upstream: http://127.0.0.1:$BACKEND
    request:
      - require_api_key:
          keys: [{client: soak, sha256: $(printf soak-key | sha256sum | cut -d' ' -f1)}]
      - set_header: {name: X-Client-Id, value: "\${client.id}"}
  - name: bearer
    match: {path: /bearer}
    upstream: http://127.0.0.1:$BACKEND
    request:
      - require_bearer: {scopes: [orders.read]}
  - name: cards
    match: {path: /cards}
    upstream: http://127.0.0.1:$BACKEND
    response:
      - mask_pan: {}
CONF
RUST_LOG=warn "$BIN" run -c "$WORK/soak.yaml" 2> "$WORK/gateway.err" & PIDS+=($!)
GW_PID=$!
for _ in $(seq 1 100); do curl -s -o /dev/null "http://127.0.0.1:$GW/" && break; sleep 0.1; done

mkdir -p benches/results
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
python3 benches/soak/driver.py --gateway "127.0.0.1:$GW" --admin "127.0.0.1:$ADMIN" --pid "$GW_PID" \
  --minutes "$MINUTES" --threads "$THREADS" --policy "$WORK/soak.yaml" \
  --report "benches/results/soak-$STAMP.md"
echo "gateway stderr (last lines):"; tail -5 "$WORK/gateway.err" || true

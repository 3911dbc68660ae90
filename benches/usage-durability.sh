#!/usr/bin/env bash
# The cost of `token_service.usage.durable`: the same bearer-protected route on SQLite, with
# usage written in batches (default) and written before each request goes upstream, in one
# run on loopback. Reports requests/s and the gateway's CPU time per request.
#
#   bash benches/usage-durability.sh [seconds per run, default 10]
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-10}
BIN=${PORTCULLIS_BIN:-target/release/portcullis}
command -v nginx >/dev/null 2>&1 && command -v wrk >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light wrk; }
[ -x "$BIN" ] || cargo build --release -p portcullis
WORK=$(mktemp -d); chmod 755 "$WORK"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; sleep 0.3; rm -rf "$WORK"; }
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
BACKEND=$(port)
cat > "$WORK/nginx.conf" <<CONF
worker_processes 1; daemon off; pid $WORK/nginx.pid; error_log $WORK/nginx.err;
events { worker_connections 4096; }
http { access_log off; server { listen 127.0.0.1:$BACKEND; keepalive_requests 1000000; location / { return 200 "ok"; } } }
CONF
taskset -c 1 nginx -c "$WORK/nginx.conf" -p "$WORK" & PIDS+=($!)
echo -n adm > "$WORK/admin-token"; echo -n app-secret > "$WORK/app.secret"
cp fixtures/oauth/gateway-es256-2026b.pem "$WORK/k.pem"
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
for durable in false true; do
  GW=$(port); ADMIN=$(port)
  rm -f "$WORK"/usage.db*
  cat > "$WORK/p.yaml" <<CONF
listen: 127.0.0.1:$GW
workers: 1
access_log: off
admin: {listen: 127.0.0.1:$ADMIN, token: admin}
secrets: {admin: {file: admin-token}, app: {file: app.secret}}
state: sqlite://usage.db
token_service:
  issuer: https://bench.test
  signing_keys: [{kid: k, file: k.pem}]
  clients: [{id: app, secret: app, scopes: [a], token_format: opaque}]
  usage: {durable: $durable}
services:
  - name: s
    upstream: http://127.0.0.1:$BACKEND
    request: [{require_bearer: {scopes: [a]}}]
CONF
  RUST_LOG=error taskset -c 0 "$BIN" run -c "$WORK/p.yaml" & PID=$!; PIDS+=($PID)
  for _ in $(seq 1 100); do curl -s -o /dev/null "http://127.0.0.1:$GW/" && break; sleep 0.1; done
  TOKEN=$(curl -s -u app:app-secret -d grant_type=client_credentials "http://127.0.0.1:$GW/oauth2/token" | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
  before=$(cpu_ticks $PID)
  out=$(taskset -c 1 wrk -t1 -c16 -d"${SECS}s" -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$GW/x")
  after=$(cpu_ticks $PID)
  rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  total=$(echo "$out" | awk '/requests in/ {print $1}')
  non2xx=$(echo "$out" | awk '/Non-2xx/ {print $5}')
  python3 -c "t=$((after - before)); n=$total; print(f'durable={\"$durable\"}: {float(\"$rps\"):.0f} req/s, {t/100/n*1e6:.1f} us CPU/request, non-2xx: ${non2xx:-0}')"
  kill $PID; wait $PID 2>/dev/null || true
done

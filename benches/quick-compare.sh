#!/usr/bin/env bash
# A first, quick throughput comparison on loopback, all in one run:
#   backend direct  vs  nginx as a plain reverse proxy  vs  Portcullis pass-through
#   vs  Portcullis with a typical request pipeline (API key, IP rule, header edits).
# The proxy under test is pinned to CPU 0; wrk and the backend (nginx serving a 75-byte
# body) to CPU 1. Reports requests/s, latency and the proxy's CPU time per request (the
# steadier figure on a shared 2-core machine). Everything binds 127.0.0.1 and is stopped
# at the end.
#
#   bash benches/quick-compare.sh [seconds per run, default 10] [connections, default 50]
#
# Needs nginx and wrk (installed from Debian's packages when missing) and a release build
# (built when missing).
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-10}
# The binary under test; PORTCULLIS_BIN compares another build (e.g. the one before a change).
BIN=${PORTCULLIS_BIN:-target/release/portcullis}
CONNS=${2:-50}

need() { command -v "$1" >/dev/null 2>&1; }
if ! need nginx || ! need wrk; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light wrk
fi
[ -x "$BIN" ] || cargo build --release -p portcullis
[ -x target/release/minimal-pingora-proxy ] || cargo build --release -p portcullis-benches --bin minimal-pingora-proxy

WORK=$(mktemp -d)
chmod 755 "$WORK"   # nginx workers read the 16 KiB body file from here
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; sleep 0.3; rm -rf "$WORK"; }
trap cleanup EXIT

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
BACKEND=$(port); NGINX=$(port); MIN=$(port); GW=$(port); GWP=$(port); GWH=$(port); GWM=$(port); GWB=$(port); ADMINB=$(port); ADMIN=$(port); ADMINP=$(port); ADMINH=$(port); ADMINM=$(port)

BODY=$(printf '%075d' 0)
# A 16 KiB JSON body of order lines (digits, dates, amounts, no card numbers) for the masking rows.
python3 -c 'import json; items=[{"id": 100000+i, "sku": "W-%05d" % i, "qty": i % 7, "price": "%d.99" % (i % 90), "date": "2026-11-23"} for i in range(196)]; print(json.dumps({"items": items}), end="")' > "$WORK/16k.json"
cat > "$WORK/backend.conf" <<CONF
worker_processes 1; daemon off; pid $WORK/backend.pid; error_log $WORK/backend.err;
events { worker_connections 4096; }
http { access_log off;
  server { listen 127.0.0.1:$BACKEND; keepalive_requests 1000000;
            location = /16k { default_type application/json; alias $WORK/16k.json; }
    location / { default_type text/plain; return 200 "$BODY"; } } }
CONF
cat > "$WORK/proxy.conf" <<CONF
worker_processes 1; daemon off; pid $WORK/proxy.pid; error_log $WORK/proxy.err;
events { worker_connections 4096; }
http { access_log off;
  upstream backend { server 127.0.0.1:$BACKEND; keepalive 64; }
  server { listen 127.0.0.1:$NGINX; keepalive_requests 1000000;
    location / { proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection ""; } } }
CONF
echo -n bench-admin > "$WORK/admin-token"
cat > "$WORK/pass.yaml" <<CONF
listen: 127.0.0.1:$GW
workers: 1
access_log: off
admin: {listen: 127.0.0.1:$ADMIN, token: admin}
secrets: {admin: {file: admin-token}}
services:
  - name: pass-through
    upstream: http://127.0.0.1:$BACKEND
CONF
cat > "$WORK/pipeline.yaml" <<CONF
listen: 127.0.0.1:$GWP
workers: 1
access_log: off
admin: {listen: 127.0.0.1:$ADMINP, token: admin}
secrets: {admin: {file: admin-token}}
services:
  - name: pipeline
    upstream: http://127.0.0.1:$BACKEND
CONF
cat benches/typical-pipeline.yaml >> "$WORK/pipeline.yaml"

echo -n bench-hmac-secret > "$WORK/hmac-secret"
cat > "$WORK/hmac.yaml" <<CONF
listen: 127.0.0.1:$GWH
workers: 1
access_log: off
admin: {listen: 127.0.0.1:$ADMINH, token: admin}
secrets: {admin: {file: admin-token}, hmac: {file: hmac-secret}}
keys:
  partners: [{access_key: AKIDBENCH, client: bench, secrets: [hmac]}]
services:
  - name: hmac
    upstream: http://127.0.0.1:$BACKEND
    request:
      # wrk repeats one pre-signed request, so replays must be allowed here.
      - require_hmac: {scheme: aws-sigv4, keys: partners, region: eu-west-1, service: bench, replay_protection: false, max_skew: 15m}
CONF

cat > "$WORK/mask.yaml" <<CONF
listen: 127.0.0.1:$GWM
workers: 1
access_log: off
admin: {listen: 127.0.0.1:$ADMINM, token: admin}
secrets: {admin: {file: admin-token}}
services:
  - name: mask
    upstream: http://127.0.0.1:$BACKEND
    response:
      - mask_pan: {}
CONF

# require_bearer: the gateway issues a JWT and an opaque token; wrk presents them.
BENCH_SECRET_SHA=$(printf bench-client-secret | sha256sum | cut -d' ' -f1)
cat > "$WORK/bearer.yaml" <<CONF
listen: 127.0.0.1:$GWB
workers: 1
access_log: off
state: memory
admin: {listen: 127.0.0.1:$ADMINB, token: admin}
secrets: {admin: {file: admin-token}}
token_service:
  issuer: https://gateway.bench
  signing_keys: [{kid: bench, file: $PWD/fixtures/oauth/gateway-es256-2026a.pem}]
  clients:
    - {id: jwt-client, secret_sha256: $BENCH_SECRET_SHA, scopes: [widgets.read]}
    - {id: opaque-client, secret_sha256: $BENCH_SECRET_SHA, scopes: [widgets.read], token_format: opaque}
services:
  - name: bearer
    upstream: http://127.0.0.1:$BACKEND
    request:
      - require_bearer: {scopes: [widgets.read]}
CONF

taskset -c 1 nginx -c "$WORK/backend.conf" & PIDS+=($!)
taskset -c 0 nginx -c "$WORK/proxy.conf" & PIDS+=($!)
taskset -c 0 target/release/minimal-pingora-proxy "127.0.0.1:$MIN" "127.0.0.1:$BACKEND" 2>/dev/null & PIDS+=($!); MIN_PID=$!
taskset -c 0 "$BIN" run -c "$WORK/pass.yaml" >/dev/null 2>"$WORK/gw.err" & PIDS+=($!); GW_PID=$!
taskset -c 0 "$BIN" run -c "$WORK/mask.yaml" >/dev/null 2>"$WORK/gwm.err" & PIDS+=($!); GWM_PID=$!
taskset -c 0 "$BIN" run -c "$WORK/hmac.yaml" >/dev/null 2>"$WORK/gwh.err" & PIDS+=($!); GWH_PID=$!
taskset -c 0 "$BIN" run -c "$WORK/pipeline.yaml" >/dev/null 2>"$WORK/gwp.err" & PIDS+=($!); GWP_PID=$!
taskset -c 0 "$BIN" run -c "$WORK/bearer.yaml" >/dev/null 2>"$WORK/gwb.err" & PIDS+=($!); GWB_PID=$!
for _ in $(seq 100); do
  [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$GWB/.well-known/jwks.json")" = 200 ] && break
  sleep 0.1
done
for p in $BACKEND $NGINX $MIN $GW $GWP $GWH $GWM; do
  for _ in $(seq 100); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$p/" -H 'X-Api-Key: demo-key-123')" = 200 ] && break
    sleep 0.1
  done
done
NGINX_WORKER=$(pgrep -P "$(cat "$WORK/proxy.pid")" | head -1)

# CPU seconds (user+system) of a process and all its threads.
cpu() { awk '{print ($14+$15)/100}' "/proc/$1/stat"; }

run() { # name url pid [header...]
  local name=$1 url=$2 pid=$3; shift 3
  local hdrs=()
  if [ $# -eq 0 ]; then hdrs=(-H "X-Bench: 1"); fi
  for h in "$@"; do hdrs+=(-H "$h"); done
  local before after out rps p50 p99
  before=$( [ "$pid" = - ] && echo 0 || cpu "$pid")
    out=$(taskset -c 1 wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency "${hdrs[@]}" "$url")
  after=$( [ "$pid" = - ] && echo 0 || cpu "$pid")
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  if grep -q "Non-2xx" <<<"$out"; then echo "$name: non-2xx answers, the run is void:"; echo "$out"; exit 1; fi
  p50=$(awk '$1=="50%" {print $2}' <<<"$out")
  p99=$(awk '$1=="99%" {print $2}' <<<"$out")
  local reqs; reqs=$(awk '/requests in/ {print $1}' <<<"$out")
  local us="-"
  [ "$pid" != - ] && us=$(awk -v a="$after" -v b="$before" -v n="$reqs" 'BEGIN { printf "%.1f", (a-b)*1e6/n }')
  printf '%-34s %10s %9s %9s %12s\n' "$name" "$rps" "$p50" "$p99" "$us"
  echo "$name|$rps|$p50|$p99|$us" >> "$WORK/rows"
}

echo "wrk -t1 -c$CONNS -d${DURATION}s, 75-byte body; proxy on CPU 0, wrk + backend on CPU 1"
printf '%-34s %10s %9s %9s %12s\n' system req/s p50 p99 "µs CPU/req"
run "backend direct (nginx static)" "http://127.0.0.1:$BACKEND/" -
run "nginx reverse proxy" "http://127.0.0.1:$NGINX/" "$NGINX_WORKER"
run "minimal Pingora proxy (floor)" "http://127.0.0.1:$MIN/" "$MIN_PID"
run "portcullis pass-through" "http://127.0.0.1:$GW/" "$GW_PID"
run "portcullis pipeline (key+ip+hdrs)" "http://127.0.0.1:$GWP/" "$GWP_PID" "X-Api-Key: demo-key-123"
mapfile -t SIGNED < <(HMAC_SECRET=bench-hmac-secret "$BIN" sign aws-sigv4 --access-key AKIDBENCH \
  --secret-env HMAC_SECRET --region eu-west-1 --service bench GET "http://127.0.0.1:$GWH/")
run "portcullis require_hmac (sigv4)" "http://127.0.0.1:$GWH/" "$GWH_PID" "${SIGNED[@]}"
bearer_token() { curl -s -u "$1:bench-client-secret" -d grant_type=client_credentials "http://127.0.0.1:$GWB/oauth2/token" \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])'; }
JWT=$(bearer_token jwt-client); OPAQUE=$(bearer_token opaque-client)
run "portcullis require_bearer (JWT)" "http://127.0.0.1:$GWB/" "$GWB_PID" "Authorization: Bearer $JWT"
run "portcullis require_bearer (opaque)" "http://127.0.0.1:$GWB/" "$GWB_PID" "Authorization: Bearer $OPAQUE"
run "portcullis pass-through, 16 KiB JSON" "http://127.0.0.1:$GW/16k" "$GW_PID"
run "portcullis mask_pan, 16 KiB JSON" "http://127.0.0.1:$GWM/16k" "$GWM_PID"

awk -F'|' '
      NR==1 {direct=$2} NR==2 {nginx=$2; ncpu=$5} NR==3 {mn=$2; mcpu=$5} NR==4 {gw=$2; gcpu=$5} NR==5 {gp=$2; pcpu=$5} NR==6 {gh=$2; hcpu=$5} NR==7 {gj=$2; jcpu=$5} NR==8 {go=$2; ocpu=$5} NR==9 {g16=$2; g16cpu=$5} NR==10 {m16=$2; m16cpu=$5}
  END {
    printf "\nratios in this run (rps; CPU per request):\n"
    printf "  portcullis pass-through / backend direct   rps %.2f\n", gw/direct
    printf "  portcullis pass-through / nginx proxy      rps %.2f; CPU %.2f\n", gw/nginx, gcpu/ncpu
    printf "  portcullis pass-through / minimal Pingora  rps %.2f; CPU %.2f\n", gw/mn, gcpu/mcpu
    printf "  minimal Pingora / nginx proxy              rps %.2f; CPU %.2f\n", mn/nginx, mcpu/ncpu
        printf "  pipeline / pass-through                    rps %.2f; CPU %.2f\n", gp/gw, pcpu/gcpu
        printf "  require_hmac (sigv4) / pass-through        rps %.2f; CPU %.2f\n", gh/gw, hcpu/gcpu
        printf "  require_bearer JWT / pass-through          rps %.2f; CPU %.2f\n", gj/gw, jcpu/gcpu
        printf "  require_bearer opaque / pass-through       rps %.2f; CPU %.2f\n", go/gw, ocpu/gcpu
    printf "  mask_pan / pass-through (16 KiB)           rps %.2f; CPU %.2f\n", m16/g16, m16cpu/g16cpu
  }' "$WORK/rows"

#!/usr/bin/env bash
# Two builds of the gateway side by side in one run: CPU time per request (the steady figure
# on a shared 2-core machine) for pass-through, the typical request pipeline (IP rule, API
# key, header edits) and require_bearer with a JWT, each measured in alternating rounds
# (before, after, before, after...) so drift in the machine hits both alike. Prints the
# median of the rounds and after/before.
#
#   bash benches/before-after.sh BEFORE_BIN AFTER_BIN [seconds per run, default 5] [rounds, default 5]
#
# Gateways on CPU 0, wrk and the backend (nginx, 75-byte body) on CPU 1; 127.0.0.1 only.
set -euo pipefail
cd "$(dirname "$0")/.."
BEFORE=${1:?before binary}; AFTER=${2:?after binary}
DURATION=${3:-5}; ROUNDS=${4:-5}; CONNS=50

need() { command -v "$1" >/dev/null 2>&1; }
if ! need nginx || ! need wrk; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light wrk
fi
WORK=$(mktemp -d); chmod 755 "$WORK"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; sleep 0.3; rm -rf "$WORK"; }
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
cpu() { awk '{print ($14+$15)/100}' "/proc/$1/stat"; }

BACKEND=$(port)
cat > "$WORK/backend.conf" <<CONF
worker_processes 1; daemon off; pid $WORK/backend.pid; error_log $WORK/backend.err;
events { worker_connections 4096; }
http { access_log off;
  server { listen 127.0.0.1:$BACKEND; keepalive_requests 1000000;
    location / { default_type text/plain; return 200 "$(printf '%075d' 0)"; } } }
CONF
taskset -c 1 nginx -c "$WORK/backend.conf" & PIDS+=($!)
echo -n bench-admin > "$WORK/admin-token"
SECRET_SHA=$(printf bench-client-secret | sha256sum | cut -d' ' -f1)

# policy NAME LISTEN ADMIN: the three scenarios as three services of one gateway would share
# a process; each scenario gets its own gateway so its CPU is its own.
policy() {
  local name=$1 listen=$2 admin=$3
  printf 'listen: 127.0.0.1:%s\nworkers: 1\naccess_log: off\nadmin: {listen: 127.0.0.1:%s, token: admin}\nsecrets: {admin: {file: admin-token}}\n' "$listen" "$admin"
  case $name in
    pass) printf 'services:\n  - name: pass\n    upstream: http://127.0.0.1:%s\n' "$BACKEND" ;;
    pipeline)
      printf 'services:\n  - name: pipeline\n    upstream: http://127.0.0.1:%s\n' "$BACKEND"
      cat benches/typical-pipeline.yaml ;;
    bearer) cat <<CONF
state: memory
token_service:
  issuer: https://gateway.bench
  signing_keys: [{kid: bench, file: $PWD/fixtures/oauth/gateway-es256-2026a.pem}]
  clients:
    - {id: jwt-client, secret_sha256: $SECRET_SHA, scopes: [widgets.read]}
services:
  - name: bearer
    upstream: http://127.0.0.1:$BACKEND
    request:
      - require_bearer: {scopes: [widgets.read]}
CONF
    ;;
  esac
}

declare -A URL PID HEADER
for build in before after; do
  bin=$BEFORE; [ "$build" = after ] && bin=$AFTER
  for scenario in pass pipeline bearer; do
    listen=$(port); admin=$(port)
    policy "$scenario" "$listen" "$admin" > "$WORK/$build-$scenario.yaml"
    taskset -c 0 "$bin" run -c "$WORK/$build-$scenario.yaml" >/dev/null 2>"$WORK/$build-$scenario.err" & PIDS+=($!)
    PID[$build-$scenario]=$!; URL[$build-$scenario]="http://127.0.0.1:$listen/"
  done
done
for key in "${!URL[@]}"; do
  for _ in $(seq 100); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "${URL[$key]}healthz-probe" -H 'X-Api-Key: demo-key-123')" != 000 ] && break
    sleep 0.1
  done
done
for build in before after; do
  HEADER[$build-pass]="X-Bench: 1"
  HEADER[$build-pipeline]="X-Api-Key: demo-key-123"
  token=$(curl -s -u jwt-client:bench-client-secret -d grant_type=client_credentials "${URL[$build-bearer]}oauth2/token" \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
  HEADER[$build-bearer]="Authorization: Bearer $token"
done

measure() { # key -> µs CPU per request
  local key=$1 before after out reqs
  before=$(cpu "${PID[$key]}")
  out=$(taskset -c 1 wrk -t1 -c"$CONNS" -d"${DURATION}s" -H "${HEADER[$key]}" "${URL[$key]}")
  after=$(cpu "${PID[$key]}")
  if grep -q "Non-2xx" <<<"$out"; then echo "$key: non-2xx answers, the run is void:" >&2; echo "$out" >&2; exit 1; fi
  reqs=$(awk '/requests in/ {print $1}' <<<"$out")
  awk -v a="$after" -v b="$before" -v n="$reqs" 'BEGIN { printf "%.2f", (a-b)*1e6/n }'
}
median() { sort -n | awk '{v[NR]=$1} END { if (NR%2) print v[(NR+1)/2]; else printf "%.2f\n", (v[NR/2]+v[NR/2+1])/2 }'; }

# Warm-up: one short run each.
for key in "${!URL[@]}"; do DURATION=1 measure "$key" >/dev/null; done
for scenario in pass pipeline bearer; do
  : > "$WORK/$scenario-before"; : > "$WORK/$scenario-after"
  for _ in $(seq "$ROUNDS"); do
    measure "before-$scenario" >> "$WORK/$scenario-before"; echo >> "$WORK/$scenario-before"
    measure "after-$scenario" >> "$WORK/$scenario-after"; echo >> "$WORK/$scenario-after"
  done
done
echo "wrk -t1 -c$CONNS, ${DURATION}s x $ROUNDS alternating rounds; gateways on CPU 0, wrk + backend on CPU 1"
printf '%-10s %14s %14s %9s   %s\n' scenario "before µs/req" "after µs/req" after/before "rounds (before | after)"
for scenario in pass pipeline bearer; do
  b=$(grep . "$WORK/$scenario-before" | median); a=$(grep . "$WORK/$scenario-after" | median)
  printf '%-10s %14s %14s %9s   %s | %s\n' "$scenario" "$b" "$a" "$(awk -v a="$a" -v b="$b" 'BEGIN{printf "%.3f", a/b}')" \
    "$(grep . "$WORK/$scenario-before" | tr '\n' ' ')" "$(grep . "$WORK/$scenario-after" | tr '\n' ' ')"
done

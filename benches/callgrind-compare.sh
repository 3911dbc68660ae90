#!/usr/bin/env bash
# Instructions per request, counted by callgrind: repeatable whatever else the machine is
# doing, unlike requests per second on a shared 2-core box. Runs the minimal Pingora proxy
# (the floor) and Portcullis pass-through under valgrind, sends N keep-alive requests to each
# through a 75-byte nginx backend, and prints the instruction count per request of each.
#
#   bash benches/callgrind-compare.sh [requests, default 2000]
#
# With BEFORE_BIN set to another build, also measures that build's pass-through and both
# builds with the typical request pipeline (IP rule, API key, header edits), and prints
# after/before for each: how a change moved the cost of a request.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-2000}
command -v valgrind >/dev/null && command -v nginx >/dev/null || {
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind nginx-light; }
[ -x target/release/portcullis ] || cargo build --release -p portcullis
[ -x target/release/minimal-pingora-proxy ] || cargo build --release -p portcullis-benches --bin minimal-pingora-proxy

WORK=$(mktemp -d); PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; sleep 0.3; rm -rf "$WORK"; }
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
BACKEND=$(port)
cat > "$WORK/backend.conf" <<CONF
worker_processes 1; daemon off; pid $WORK/backend.pid; error_log $WORK/backend.err;
events { worker_connections 1024; }
http { access_log off; server { listen 127.0.0.1:$BACKEND; keepalive_requests 1000000;
  location / { default_type text/plain; return 200 "$(printf '%075d' 0)"; } } }
CONF
nginx -c "$WORK/backend.conf" & PIDS+=($!)
cat > "$WORK/load.py" <<'PY'
import http.client, sys
c = http.client.HTTPConnection("127.0.0.1", int(sys.argv[1]))
for _ in range(int(sys.argv[2])):
    c.request("GET", "/x", headers={"X-Api-Key": "demo-key-123"})
    r = c.getresponse(); r.read()
    assert r.status == 200, r.status
PY

total() { callgrind_annotate "$1" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}'; }

# Runs a proxy under callgrind twice as long as it takes to answer: once with 10 requests
# (start-up and shutdown) and once with N+10; the difference / N is the cost per request.
measure() { # name port cmd...
  local name=$1 p=$2; shift 2
  local counts=()
  for n in 10 $((N + 10)); do
    valgrind --tool=callgrind --callgrind-out-file="$WORK/$name.$n" "$@" >/dev/null 2>&1 &
    local vp=$!
    for _ in $(seq 300); do curl -s -o /dev/null "http://127.0.0.1:$p/x" && break; sleep 0.2; done
    python3 "$WORK/load.py" "$p" "$n"
    kill -INT "$vp"; wait "$vp" 2>/dev/null || true
    counts+=("$(total "$WORK/$name.$n")")
  done
  awk -v a="${counts[0]}" -v b="${counts[1]}" -v n="$N" -v name="$name" \
    'BEGIN { printf "%-28s %10.0f instructions/request\n", name, (b - a) / n }' | tee -a "$WORK/rows"
}

MIN=$(port); GW=$(port); ADMIN=$(port)
echo -n bench > "$WORK/token"
cat > "$WORK/pass.yaml" <<CONF
listen: 127.0.0.1:$GW
workers: 1
access_log: off
admin: {listen: 127.0.0.1:$ADMIN, token: admin}
secrets: {admin: {file: token}}
services:
  - name: pass-through
    upstream: http://127.0.0.1:$BACKEND
CONF
measure "minimal Pingora proxy" "$MIN" target/release/minimal-pingora-proxy "127.0.0.1:$MIN" "127.0.0.1:$BACKEND"
measure "portcullis pass-through" "$GW" target/release/portcullis run -c "$WORK/pass.yaml"
awk 'NR==1 {a=$(NF-1)} NR==2 {b=$(NF-1)} END {printf "ratio portcullis / minimal Pingora: %.2f\n", b/a}' "$WORK/rows"

if [ -n "${BEFORE_BIN:-}" ]; then
  cat "$WORK/pass.yaml" benches/typical-pipeline.yaml > "$WORK/pipeline.yaml"
  measure "before pass-through" "$GW" "$BEFORE_BIN" run -c "$WORK/pass.yaml"
  measure "before pipeline" "$GW" "$BEFORE_BIN" run -c "$WORK/pipeline.yaml"
  measure "after pipeline" "$GW" target/release/portcullis run -c "$WORK/pipeline.yaml"
  awk 'NR==2 {pass=$(NF-1)} NR==3 {before_pass=$(NF-1)} NR==4 {before_pipe=$(NF-1)} NR==5 {pipe=$(NF-1)}
       END {printf "after/before: pass-through %.3f, pipeline %.3f\n", pass/before_pass, pipe/before_pipe}' "$WORK/rows"
fi

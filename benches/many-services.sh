#!/usr/bin/env bash
# Memory and load time as the number of services grows: the gateway's RSS with 1 and with N
# services (each a path prefix with its own upstream), the difference per service, and how
# long `check` takes to load and compile the N-service policy, and how long a reload through
# the admin API takes.
#
#   bash benches/many-services.sh [services, default 10000]
#
# The CPU per request with 1, 100 and 10,000 services is the load harness's `services-*`
# scenarios (see docs/performance.md); this script answers what a scenario row cannot: memory
# per service and policy load time. Needs a release build (built when missing); set
# PORTCULLIS_BIN to measure another binary.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-10000}
BIN=${PORTCULLIS_BIN:-target/release/portcullis}
[ -x "$BIN" ] || cargo build --release -p portcullis

WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; sleep 0.3; rm -rf "$WORK"; }
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
echo -n bench-admin > "$WORK/admin-token"

# policy FILE COUNT LISTEN ADMIN: COUNT services, /svc-0 ... /svc-(COUNT-1).
policy() {
  python3 - "$@" <<'PY'
import sys
path, count, listen, admin = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
with open(path, "w") as f:
    f.write(f"listen: 127.0.0.1:{listen}\nworkers: 1\naccess_log: off\nstate: memory\n")
    f.write(f"admin: {{listen: 127.0.0.1:{admin}, token: admin}}\nsecrets: {{admin: {{file: admin-token}}}}\nservices:\n")
    for i in range(count):
        f.write(f"  - name: svc-{i}\n    match: {{path: /svc-{i}}}\n    upstream: http://127.0.0.1:{9000 + i % 1000}\n")
PY
}

# rss COUNT: starts the gateway with COUNT services, prints its RSS in KiB once it is ready.
rss() {
  local listen admin
  listen=$(port); admin=$(port)
  policy "$WORK/gw-$1.yaml" "$1" "$listen" "$admin"
  RUST_LOG=error "$BIN" run -c "$WORK/gw-$1.yaml" >/dev/null 2>&1 & local pid=$!
  PIDS+=($pid)
  for _ in $(seq 1 600); do
    curl -sf -H "Authorization: Bearer bench-admin" "http://127.0.0.1:$admin/healthz" >/dev/null 2>&1 && break
    sleep 0.1
  done
  sleep 1
  awk '/VmRSS/ {print $2}' "/proc/$pid/status"
  # A reload of the same policy through the admin API, timed from outside (three runs).
  for _ in 1 2 3; do
    curl -s -o /dev/null -w '%{time_total}\n' -X POST -H "Authorization: Bearer bench-admin" \
      "http://127.0.0.1:$admin/api/reload" >> "$WORK/reload-$1"
  done
  kill "$pid"; wait "$pid" 2>/dev/null || true
}

one=$(rss 1)
many=$(rss "$N")
start=$(date +%s.%N)
"$BIN" check -c "$WORK/gw-$N.yaml" >/dev/null
end=$(date +%s.%N)
python3 - "$one" "$many" "$N" "$start" "$end" <<'PY'
import sys
one, many, n, start, end = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
print(f"RSS with 1 service: {one / 1024:.1f} MiB; with {n}: {many / 1024:.1f} MiB")
print(f"per service: {(many - one) * 1024 / (n - 1):.0f} bytes")
print(f"check (parse + compile) of {n} services: {end - start:.2f} s")
PY
echo "reload through the admin API (seconds, three runs): 1 service: $(paste -sd' ' "$WORK/reload-1"); $N services: $(paste -sd' ' "$WORK/reload-$N")"

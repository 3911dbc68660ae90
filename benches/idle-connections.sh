#!/usr/bin/env bash
# Memory held per client connection that sent half a request head and went quiet: the
# gateway against nginx, the same N connections each, in one run on loopback.
#
#   bash benches/idle-connections.sh [connections, default 2000] [half-head|keep-alive]
#
# Each server gets one worker and a pass-through route; a Python client opens N
# connections, sends "GET / HTTP/1.1\r\nHost: x\r\nX-Partial: " on each and holds them
# (half-head, the default), or sends one whole request, reads its answer and holds the
# connection open and idle (keep-alive);
# the figure is the server process's RSS growth divided by N (nginx: its worker). Deadlines
# are set long enough (60 s) that nothing is cut off while it is measured. Needs nginx
# (installed from Debian's packages when missing) and a release build (built when missing).
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-2000}
MODE=${2:-half-head}
BIN=${PORTCULLIS_BIN:-target/release/portcullis}

command -v nginx >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light; }
[ -x "$BIN" ] || cargo build --release -p portcullis
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; sleep 0.3; rm -rf "$WORK"; }
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
BACKEND=$(port); NGINX=$(port); GW=$(port); ADMIN=$(port)

cat > "$WORK/nginx.conf" <<CONF
worker_processes 1; daemon off; pid $WORK/nginx.pid; error_log $WORK/nginx.err;
events { worker_connections 16384; }
http { access_log off; client_header_timeout 60s; keepalive_timeout 60s; keepalive_requests 100000;
  server { listen 127.0.0.1:$BACKEND; location / { return 200 "ok"; } }
  server { listen 127.0.0.1:$NGINX; location / { proxy_pass http://127.0.0.1:$BACKEND; } } }
CONF
nginx -c "$WORK/nginx.conf" -p "$WORK" & PIDS+=($!)
echo -n bench-admin > "$WORK/admin-token"
cat > "$WORK/gw.yaml" <<CONF
listen: 127.0.0.1:$GW
workers: 1
access_log: off
admin: {listen: 127.0.0.1:$ADMIN, token: admin}
secrets: {admin: {file: admin-token}}
client_limits: {header_timeout: 60s, idle_timeout: 60s, max_connections: 20000, max_connections_per_ip: 20000}
services:
  - name: pass
    upstream: http://127.0.0.1:$BACKEND
CONF
# A binary from before client_limits existed holds half-heads for 60 s anyway.
"$BIN" check -c "$WORK/gw.yaml" >/dev/null 2>&1 || sed -i '/^client_limits:/d' "$WORK/gw.yaml"
RUST_LOG=error "$BIN" run -c "$WORK/gw.yaml" & PIDS+=($!)
GW_PID=$!
sleep 1.5

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
nginx_worker() { pgrep -P "$(cat "$WORK/nginx.pid")" | head -1; }

# Opens N half-heads to port $1, writes "ready" to $2, holds them until killed.
hold() {
  exec python3 - "$1" "$N" "$2" "$MODE" <<'PY'
import socket, sys, time
port, n, ready, mode = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
held = []
for _ in range(n):
    s = socket.create_connection(("127.0.0.1", port))
    if mode == "keep-alive":
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = b""
        while not answer.endswith(b"ok"):
            chunk = s.recv(4096)
            if not chunk:
                raise SystemExit("connection closed")
            answer += chunk
    else:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Partial: ")
    held.append(s)
open(ready, "w").write("ready")
time.sleep(600)
PY
}

measure() {  # name port pid
  local before after holder
  # A warm-up request so lazily built state is not counted.
  curl -s -o /dev/null "http://127.0.0.1:$2/" || true
  sleep 0.5
  before=$(rss_kib "$3")
  hold "$2" "$WORK/$1.ready" & holder=$!
  for _ in $(seq 1 300); do [ -s "$WORK/$1.ready" ] && break; sleep 0.1; done
  [ -s "$WORK/$1.ready" ] || { echo "$1: the client could not open $N connections"; kill "$holder"; return 1; }
  sleep 2
  after=$(rss_kib "$3")
  kill "$holder" 2>/dev/null || true
  wait "$holder" 2>/dev/null || true
  python3 -c "b,a,n=$before,$after,$N; print(f'$1: RSS {b/1024:.1f} MiB -> {a/1024:.1f} MiB with {n} $MODE connections: {(a-b)/n:.2f} KiB per connection')"
  echo "$(( (after - before) * 1000 / N ))" > "$WORK/$1.per"
  sleep 1
}

measure nginx "$NGINX" "$(nginx_worker)"
measure portcullis "$GW" "$GW_PID"
python3 -c "n=$(cat "$WORK/nginx.per"); p=$(cat "$WORK/portcullis.per"); print(f'ratio portcullis/nginx: {p/max(n,1):.2f}x')"

"""Soak driver: mixed traffic with expected answers, reloads, per-minute samples.

Every request knows the status it must get; anything else is counted as unexpected and
its first examples are kept for the report. A response from /cards must never hold the
clear card number. Samples (RSS, open fds, p99 of the last minute) come from /proc.
"""
import argparse
import base64
import http.client
import json
import os
import random
import threading
import time

CLEAR_PAN = b"4111111111111111"


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.latencies = []
        self.total = 0
        self.unexpected = 0
        self.examples = []
        self.by_kind = {}

    def record(self, kind, ms, ok, detail):
        with self.lock:
            self.latencies.append(ms)
            self.total += 1
            self.by_kind[kind] = self.by_kind.get(kind, 0) + 1
            if not ok:
                self.unexpected += 1
                if len(self.examples) < 10:
                    self.examples.append(detail)

    def take_latencies(self):
        with self.lock:
            out, self.latencies = self.latencies, []
            return out


class Tokens:
    """Opaque tokens from the token service; some are revoked through the admin API."""

    def __init__(self, gateway, admin):
        self.gateway, self.admin = gateway, admin
        self.lock = threading.Lock()
        self.live, self.revoked = [], []

    def issue(self):
        form = "grant_type=client_credentials"
        basic = base64.b64encode(b"app:soak-app-secret").decode()
        conn = http.client.HTTPConnection(self.gateway, timeout=10)
        conn.request("POST", "/oauth2/token", form, {
            "Content-Type": "application/x-www-form-urlencoded",
            "Authorization": f"Basic {basic}",
        })
        resp = conn.getresponse()
        body = resp.read()
        conn.close()
        if resp.status != 200:
            raise RuntimeError(f"token endpoint answered {resp.status}: {body[:200]!r}")
        token = json.loads(body)["access_token"]
        with self.lock:
            self.live.append(token)

    def revoke_one(self):
        with self.lock:
            if len(self.live) < 2:
                return
            token = self.live.pop(0)
        conn = http.client.HTTPConnection(self.gateway, timeout=10)
        basic = base64.b64encode(b"app:soak-app-secret").decode()
        conn.request("POST", "/oauth2/revoke", f"token={token}", {
            "Content-Type": "application/x-www-form-urlencoded",
            "Authorization": f"Basic {basic}",
        })
        resp = conn.getresponse()
        resp.read()
        conn.close()
        with self.lock:
            self.revoked.append(token)

    def pick(self, revoked):
        with self.lock:
            pool = self.revoked if revoked else self.live
            return random.choice(pool) if pool else None


def worker(args, stats, tokens, stop):
    conn = http.client.HTTPConnection(args.gateway, timeout=10)
    while not stop.is_set():
        roll = random.random()
        headers = {}
        if roll < 0.25:
            kind, path, want = "key-valid", "/keyed/1", 200
            headers["X-Api-Key"] = "soak-key"
        elif roll < 0.35:
            kind, path, want = "key-invalid", "/keyed/1", 401
            headers["X-Api-Key"] = "wrong-key"
        elif roll < 0.55:
            token = tokens.pick(False)
            kind, path, want = "bearer-valid", "/bearer/1", 200
            headers["Authorization"] = f"Bearer {token}"
        elif roll < 0.62:
            token = tokens.pick(True)
            if token is None:
                continue
            kind, path, want = "bearer-revoked", "/bearer/1", 401
            headers["Authorization"] = f"Bearer {token}"
        elif roll < 0.85:
            kind, path, want = "pan", "/cards/1", 200
        elif roll < 0.93:
            kind, path, want = "no-route", "/nowhere", 404
        else:
            kind, path, want = "ambiguous", "/keyed;x/1", 400
        started = time.monotonic()
        try:
            conn.request("GET", path, headers=headers)
            resp = conn.getresponse()
            body = resp.read()
            status = resp.status
            if resp.getheader("connection", "").lower() == "close":
                conn.close()
                conn = http.client.HTTPConnection(args.gateway, timeout=10)
        except Exception as e:  # a broken connection is an unexpected answer too
            status, body = 0, str(e).encode()
            conn.close()
            conn = http.client.HTTPConnection(args.gateway, timeout=10)
        ms = (time.monotonic() - started) * 1000
        ok = status == want
        # A token revoked a moment ago may still be in flight as "valid" in this thread.
        if kind == "bearer-valid" and status == 401:
            ok = True
        if kind == "pan" and CLEAR_PAN in body:
            ok = False
        stats.record(kind, ms, ok, f"{kind} {path}: {status} (wanted {want}) {body[:120]!r}")


def reload(admin):
    conn = http.client.HTTPConnection(admin, timeout=10)
    conn.request("POST", "/api/reload", headers={"Authorization": "Bearer soak-admin-token"})
    resp = conn.getresponse()
    resp.read()
    conn.close()
    return resp.status


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gateway", required=True)
    ap.add_argument("--admin", required=True)
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--minutes", type=float, default=30)
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--policy", required=True)
    ap.add_argument("--report", required=True)
    args = ap.parse_args()

    stats, tokens, stop = Stats(), Tokens(args.gateway, args.admin), threading.Event()
    for _ in range(5):
        tokens.issue()
    tokens.revoke_one()
    threads = [threading.Thread(target=worker, args=(args, stats, tokens, stop), daemon=True)
               for _ in range(args.threads)]
    for t in threads:
        t.start()
    samples, reloads, reload_failures = [], 0, 0
    started = time.monotonic()
    next_reload, next_sample, next_token = started + 30, started + 60, started + 5
    samples.append({"minute": 0, "rss_kib": rss_kib(args.pid), "fds": fds(args.pid), "p99_ms": 0.0,
                    "requests": 0})
    last_total = 0
    end = started + args.minutes * 60
    while time.monotonic() < end:
        time.sleep(0.5)
        now = time.monotonic()
        if now >= next_token:
            tokens.issue()
            tokens.revoke_one()
            next_token = now + 5
        if now >= next_reload:
            reloads += 1
            if reload(args.admin) != 200:
                reload_failures += 1
            next_reload = now + 30
        if now >= next_sample:
            lat = sorted(stats.take_latencies())
            p99 = lat[int(len(lat) * 0.99)] if lat else 0.0
            samples.append({"minute": len(samples), "rss_kib": rss_kib(args.pid),
                            "fds": fds(args.pid), "p99_ms": round(p99, 2),
                            "requests": stats.total - last_total})
            last_total = stats.total
            print(json.dumps(samples[-1]), flush=True)
            next_sample = now + 60
    stop.set()
    for t in threads:
        t.join(timeout=15)

    steady = samples[1:] if len(samples) > 2 else samples
    n = len(steady)
    if n >= 2:
        xs = [s["minute"] for s in steady]
        ys = [s["rss_kib"] for s in steady]
        mx, my = sum(xs) / n, sum(ys) / n
        slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / max(sum((x - mx) ** 2 for x in xs), 1)
    else:
        slope = 0.0
    lines = [
        f"# Soak run: {args.minutes:g} min, {args.threads} client threads",
        "",
        f"- requests: {stats.total} ({stats.total / (args.minutes * 60):.0f}/s), by kind: "
        + ", ".join(f"{k} {v}" for k, v in sorted(stats.by_kind.items())),
        f"- unexpected answers: {stats.unexpected}",
        f"- reloads: {reloads} ({reload_failures} failed)",
        f"- RSS slope after the first minute: {slope:.1f} KiB/min",
        f"- fds: {min(s['fds'] for s in samples)}..{max(s['fds'] for s in samples)}",
        "",
        "| minute | RSS (MiB) | fds | p99 (ms) | requests |",
        "|---|---|---|---|---|",
    ]
    for s in samples:
        lines.append(f"| {s['minute']} | {s['rss_kib'] / 1024:.1f} | {s['fds']} | {s['p99_ms']} | {s['requests']} |")
    if stats.examples:
        lines += ["", "First unexpected answers:", ""] + [f"- `{e}`" for e in stats.examples]
    with open(args.report, "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""gRPC and WebSocket through the gateway against nginx (issue 21).

Started by `tests/bench/run --protocols`, which installs what is missing,
builds the release binary, the plugins and the WebSocket load tool
(tests/bench/ws-load), makes the temporary folder and kills (by PID)
whatever this script leaves behind.

Everything runs on 127.0.0.1: the demo upstream (`tollgate demo-upstream`:
a gRPC echo for any method over h2c, a WebSocket echo on /ws), nginx
proxying both (`grpc_pass`, and `proxy_pass` with the Upgrade fields), and
the gateway with key-auth → rate-limit on both APIs (the gRPC API's
upstream spoken to over h2c; the WebSocket API with `[api.websocket]`).
Each round measures, in an order that rotates from round to round:

- gRPC unary: `h2load` (HTTP/2 with prior knowledge, 16 connections of 8
  streams each) posting one framed message as fast as answered, with the
  proxy's CPU time per call;
- WebSocket echo: `ws-load`, 64 connections opened first, each sending a
  64-byte message and waiting for its echo, one after the other; messages
  per second, round trip p50 and p99, and the proxy's CPU time per message.

Against the upstream directly, through nginx and through the gateway, in
the same run; ratios are taken within each round against nginx. The
markdown goes to stdout and, in full runs, into docs/performance.md between
the bench:protocols markers.

Python 3 standard library only.
"""

import json
import os
import re
import statistics
import struct
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import (  # noqa: E402  (the peer benchmark's process handling)
    DOC, GATEWAY_LOG, KEY, PLUGINS, TOLLGATE, BenchError, child_pids, cpu_seconds,
    free_port, log, script_main, tail, write_section,
)

START = "<!-- bench:protocols:start -->"
END = "<!-- bench:protocols:end -->"
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WS_LOAD = os.path.join(ROOT, "target", "release", "ws-load")
GRPC_PATH = "/bench.Echo/Say"
GRPC_CONNECTIONS = 16
GRPC_STREAMS = 8
WS_CONNECTIONS = 64

MANIFEST = """schema = 1

[[consumer]]
id = "bench"
keys = [{{ id = "k1", sha256 = "{digest}" }}]

[[api]]
name = "grpc"
upstream = {{ targets = ["http://127.0.0.1:{up_port}"], protocol = "h2c" }}

[[api.route]]
prefix = "/bench.Echo/"

[[api.chain]]
plugin = "key-auth"
grants = ["consumers"]

[[api.chain]]
plugin = "rate-limit"
grants = ["counters"]
config = {{ limits = [{{ per = "second", requests = 10000000, by = "consumer" }}] }}

[[api]]
name = "grpc-bare"
upstream = {{ targets = ["http://127.0.0.1:{up_port}"], protocol = "h2c" }}

[[api.route]]
prefix = "/bench.Bare/"

[[api]]
name = "ws"
upstream = {{ targets = ["http://127.0.0.1:{up_port}"] }}

[[api.route]]
prefix = "/ws"

[api.websocket]

[[api.chain]]
plugin = "key-auth"
grants = ["consumers"]

[[api.chain]]
plugin = "rate-limit"
grants = ["counters"]
config = {{ limits = [{{ per = "second", requests = 10000000, by = "consumer" }}] }}
"""

GATEWAY = """schema = 1
data-dir = "data-gateway"
policies = ["api.toml"]

[[listener]]
name = "bench"
address = "127.0.0.1:{port}"

[plugins]
dirs = ["{plugins}"]
cache-dir = "plugin-cache"

[reload]
watch = false
"""

NGINX = """worker_processes auto;
worker_rlimit_nofile 8192;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{ worker_connections 8192; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/nginx-tmp/body;
    proxy_temp_path {tmp}/nginx-tmp/proxy;
    keepalive_timeout 300s;
    keepalive_requests 100000000;
    http2_max_requests 100000000;
    upstream up {{
        server 127.0.0.1:{up_port};
        keepalive 256;
    }}
    server {{
        listen 127.0.0.1:{port} http2;
        location / {{
            grpc_pass grpc://up;
        }}
    }}
    server {{
        listen 127.0.0.1:{ws_port};
        location / {{
            proxy_pass http://127.0.0.1:{up_port};
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection "upgrade";
            proxy_read_timeout 60s;
        }}
    }}
}}
"""


class Target:
    """Where the load goes: the upstream, nginx or the gateway."""

    def __init__(self, name, grpc_port, ws_port, proc=None, grpc_path=GRPC_PATH):
        self.name = name
        self.grpc_port = grpc_port
        self.ws_port = ws_port  # None: no WebSocket run
        self.proc = proc
        self.grpc_path = grpc_path

    def pids(self):
        return [self.proc.pid] + child_pids(self.proc.pid)


def grpc_frame(message=b"\x0a\x05hello\x10\x2a"):
    """One gRPC message as sent on the wire: uncompressed, its length, it."""
    return b"\x00" + struct.pack(">I", len(message)) + message


def parse_h2load(text):
    """Requests per second and the 2xx count from h2load's summary."""
    rps = re.search(r"finished in [\d.]+\w*, ([\d.]+) req/s", text)
    done = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded", text)
    codes = re.search(r"status codes: (\d+) 2xx", text)
    if not (rps and done and codes):
        raise BenchError(f"h2load's summary is not as expected:\n{text[-2000:]}")
    return {"rps": float(rps.group(1)), "done": int(done.group(1)),
            "ok": int(codes.group(1))}


def parse_ws_load(text):
    """The JSON line ws-load prints."""
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{"):
            d = json.loads(line)
            return {"rate": float(d["rate"]), "messages": int(d["messages"]),
                    "p50": int(d["p50_us"]), "p99": int(d["p99_us"])}
    raise BenchError(f"ws-load printed no result:\n{text[-2000:]}")


def grpc_load(t, body, duration):
    args = ["h2load", "-c", str(GRPC_CONNECTIONS), "-m", str(GRPC_STREAMS), "-t", "1",
            "-D", str(duration), "-d", body,
            "-H", "content-type: application/grpc", "-H", "te: trailers",
            "-H", f"x-api-key: {KEY}",
            f"http://127.0.0.1:{t.grpc_port}{t.grpc_path}"]
    before = cpu_seconds(t.pids())
    out = subprocess.run(args, capture_output=True, text=True, timeout=duration + 60)
    cpu = cpu_seconds(t.pids()) - before
    res = parse_h2load(out.stdout)
    if res["done"] == 0 or res["ok"] < res["done"]:
        raise BenchError(f"gRPC through {t.name}: {res['ok']} of {res['done']} answered 2xx:\n"
                         + out.stdout[-2000:])
    res["cpu_us"] = cpu / res["done"] * 1e6
    return res


def ws_load(t, duration):
    args = [WS_LOAD, f"ws://127.0.0.1:{t.ws_port}/ws", str(WS_CONNECTIONS), str(duration),
            f"x-api-key:{KEY}"]
    before = cpu_seconds(t.pids())
    out = subprocess.run(args, capture_output=True, text=True, timeout=duration + 60)
    cpu = cpu_seconds(t.pids()) - before
    if out.returncode != 0:
        raise BenchError(f"ws-load through {t.name} failed:\n{out.stdout}{out.stderr}")
    res = parse_ws_load(out.stdout)
    res["cpu_us"] = cpu / max(res["messages"], 1) * 1e6
    return res


def med(values):
    return statistics.median(values)


def span(values, digits=0, suffix=""):
    f = f"{{:,.{digits}f}}"
    if len(values) == 1:
        return f.format(values[0]) + suffix
    return f"{f.format(med(values))}{suffix} ({f.format(min(values))}–{f.format(max(values))})"


def report(rounds, meta):
    """The markdown section: per target, gRPC and WebSocket figures
    (medians over the rounds, min–max), ratios against nginx per round."""
    names = ["direct", "nginx", "tollgate-0", "tollgate"]
    label = {"direct": "upstream, direct", "nginx": "nginx",
             "tollgate-0": "tollgate, 0 steps (gRPC only)",
             "tollgate": "tollgate (key-auth → rate-limit)"}
    n = len(rounds)
    lines = [
        START,
        "",
        f"gRPC unary calls and WebSocket echo messages through nginx and through the gateway "
        f"(`tests/bench/run --protocols`; {n} round(s) of {meta['duration']} s, "
        f"{meta['cpus']} CPUs, {meta['date']}). The demo upstream answers both (a gRPC echo "
        "over h2c, a WebSocket echo); the gateway runs key-auth → rate-limit on both APIs (on "
        "the WebSocket handshake, then relays frames it parses), and a gRPC API without steps. "
        f"gRPC: h2load, {GRPC_CONNECTIONS} HTTP/2 connections × {GRPC_STREAMS} streams, as fast "
        f"as answered. WebSocket: {WS_CONNECTIONS} connections, each a 64-byte message then its "
        "echo, one after the other. CPU: the proxy's (nginx: all its processes) per call or "
        "message. Medians with min–max; ratios within each round against nginx.",
        "",
        "| | gRPC unary (calls/s) | ÷ nginx | CPU µs/call | WebSocket echo (messages/s) "
        "| ÷ nginx | round trip p50 (µs) | p99 (µs) | CPU µs/message |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name in names:
        if name not in rounds[0]:
            continue
        g = [r[name]["grpc"]["rps"] for r in rounds]
        g_ratio = [r[name]["grpc"]["rps"] / r["nginx"]["grpc"]["rps"] for r in rounds]
        cpu = "—" if name == "direct" else span([r[name]["grpc"]["cpu_us"] for r in rounds], 1)
        if "ws" in rounds[0][name]:
            w = [r[name]["ws"]["rate"] for r in rounds]
            w_ratio = [r[name]["ws"]["rate"] / r["nginx"]["ws"]["rate"] for r in rounds]
            wcpu = ("—" if name == "direct"
                    else span([r[name]["ws"]["cpu_us"] for r in rounds], 1))
            ws = (f"{span(w)} | {span(w_ratio, 2, '×')} | "
                  f"{span([r[name]['ws']['p50'] for r in rounds])} | "
                  f"{span([r[name]['ws']['p99'] for r in rounds])} | {wcpu}")
        else:
            ws = "— | — | — | — | —"
        lines.append(f"| {label[name]} | {span(g)} | {span(g_ratio, 2, '×')} | {cpu} | {ws} |")
    lines += ["", END]
    return "\n".join(lines) + "\n"


def write_doc(md, doc=DOC):
    write_section(md, START, END, "gRPC and WebSocket: the gateway against nginx", doc)


def bench(a, procs):
    tmp = a.tmp
    env = {"TOLLGATE_LOG": GATEWAY_LOG}
    digest = subprocess.run([TOLLGATE, "hash-key", KEY], capture_output=True, text=True,
                            check=True).stdout.strip()
    up_port = free_port()
    up = procs.spawn("upstream", [TOLLGATE, "demo-upstream", "--listen", f"127.0.0.1:{up_port}"],
                     "direct", env)
    procs.wait_ready(up, up_port, "upstream", os.path.join(tmp, "upstream.log"))

    nginx_port, nginx_ws = free_port(), free_port()
    os.makedirs(os.path.join(tmp, "nginx-tmp"), exist_ok=True)
    conf = os.path.join(tmp, "nginx.conf")
    with open(conf, "w") as f:
        f.write(NGINX.format(tmp=tmp, up_port=up_port, port=nginx_port, ws_port=nginx_ws))
    ngx = procs.spawn("nginx", ["nginx", "-c", conf, "-g", "daemon off;"], "nginx")
    procs.wait_ready(ngx, nginx_port, "nginx", os.path.join(tmp, "nginx.log"))

    gw_port = free_port()
    with open(os.path.join(tmp, "api.toml"), "w") as f:
        f.write(MANIFEST.format(digest=digest, up_port=up_port))
    gconf = os.path.join(tmp, "gateway.toml")
    with open(gconf, "w") as f:
        f.write(GATEWAY.format(port=gw_port, plugins=PLUGINS))
    check = subprocess.run([TOLLGATE, "check", gconf], capture_output=True, text=True)
    if check.returncode != 0:
        raise BenchError(f"tollgate check {gconf} failed:\n{check.stdout}{check.stderr}")
    gw = procs.spawn("gateway", [TOLLGATE, "run", "--config", gconf], "tollgate", env)
    logpath = os.path.join(tmp, "gateway.log")
    procs.wait_ready(gw, gw_port, "gateway", logpath)
    deadline = time.time() + 300
    # Two distinct steps (both APIs run the same two, which share snapshots).
    while open(logpath, errors="replace").read().count("configured snapshot ready") < 2:
        if gw.poll() is not None or time.time() > deadline:
            raise BenchError("gateway: snapshots not ready:\n" + tail(logpath))
        time.sleep(0.1)

    body = os.path.join(tmp, "grpc-message.bin")
    with open(body, "wb") as f:
        f.write(grpc_frame())
    targets = [Target("direct", up_port, up_port, up), Target("nginx", nginx_port, nginx_ws, ngx),
               Target("tollgate-0", gw_port, None, gw, grpc_path="/bench.Bare/Say"),
               Target("tollgate", gw_port, gw_port, gw)]
    # Warm each path once (connections, the gateway's first calls).
    for t in targets:
        grpc_load(t, body, 1)
        if t.ws_port:
            ws_load(t, 1)

    rounds = []
    for r in range(a.rounds):
        res = {t.name: {} for t in targets}
        order = targets[r % len(targets):] + targets[:r % len(targets)]
        for kind in (["grpc", "ws"] if r % 2 == 0 else ["ws", "grpc"]):
            for t in order:
                if kind == "grpc":
                    res[t.name][kind] = grpc_load(t, body, a.duration)
                elif t.ws_port:
                    res[t.name][kind] = ws_load(t, a.duration)
        log(f"round {r + 1}: gRPC " + ", ".join(
            f"{t.name} {res[t.name]['grpc']['rps']:,.0f}/s" for t in targets)
            + "; WebSocket " + ", ".join(
            f"{t.name} {res[t.name]['ws']['rate']:,.0f}/s" for t in targets if t.ws_port))
        rounds.append(res)
    for t in targets:
        if t.proc.poll() is not None:
            raise BenchError(f"{t.name} exited during the run:\n"
                             + tail(os.path.join(tmp, f"{t.proc.args[0]}.log")))
    meta = {"duration": a.duration, "cpus": os.cpu_count(), "date": time.strftime("%Y-%m-%d")}
    md = report(rounds, meta)
    print(md)
    if a.write:
        write_doc(md)
        log(f"wrote {DOC}")
    return 0


def main():
    return script_main(__doc__, bench, [TOLLGATE, WS_LOAD, os.path.join(PLUGINS, "rate_limit.wasm")], rounds=3)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as e:
        log(f"error: {e}")
        sys.exit(1)

#!/usr/bin/env python3
"""One gateway with its embedded store against three sharing Redis (issue 20).

Started by `tests/bench/run --cluster`, which installs what is missing, builds
the release binary and the plugins, makes the temporary folder and kills (by
PID) whatever this script leaves behind.

Everything runs on 127.0.0.1: one fast upstream (`tollgate demo-upstream`),
one Redis (AOF, `appendfsync everysec`, as docs/cluster.md recommends), one
gateway without `[cluster]` ("1 node, sled": rate limits in memory, quotas in
sled) and three gateways with it ("3 nodes, Redis": both in Redis, one
`EVALSHA` round trip each: the rate-limit step's two limits, a second's
and an hour's, in one script). All four serve the same chain:
key-auth → rate-limit (two limits) → quota, with limits no call reaches, so
every call does the full work of being counted and is let through.

Each round measures, in an order that rotates from round to round:

- throughput: `wrk` as fast as the gateways answer, 64 connections in all
  (the three nodes get a third each, at the same time), with the CPU time of
  the gateways (and of Redis) over the run per request served;
- latency: one connection, one request after the other, against one gateway
  of each kind (p50 and p99 from `wrk --latency`); the difference between
  the two p50s is what the Redis round trips add to a request.

The processes not being measured are paused (SIGSTOP). Redis's own
`INFO commandstats` gives the Redis calls per request. Results: medians over
the rounds with min-max; ratios are taken within each round against the
one-node figures of the same round. On a machine with fewer cores than
processes the three nodes share those cores: the total is then a measure of
the cost of Redis, not of scaling out (each node of a real cluster has its
own machine). The markdown goes to stdout and, in full runs, into
docs/performance.md between the bench:cluster markers.

Python 3 standard library only.
"""

import http.client
import os
import re
import signal
import statistics
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import (  # noqa: E402  (the peer benchmark's process handling)
    DOC, GATEWAY_LOG, HEADERS, KEY, PATH, PLUGINS, TOLLGATE, BenchError, cpu_seconds,
    free_port, log, script_main, tail, write_section,
)

START = "<!-- bench:cluster:start -->"
END = "<!-- bench:cluster:end -->"
CONNECTIONS = 64
NODES = 3

MANIFEST = """schema = 1

[[consumer]]
id = "bench"
app = "bench-app"
plan = "gold"
keys = [{{ id = "k1", sha256 = "{digest}" }}]

[[api]]
name = "bench"
upstream = {{ targets = ["http://127.0.0.1:{up_port}"] }}

[[api.route]]
name = "all"
prefix = "/"

[[api.chain]]
plugin = "key-auth"
grants = ["consumers"]

[[api.chain]]
plugin = "rate-limit"
grants = ["counters"]
config = {{ limits = [
  {{ per = "second", requests = 10000000, by = "consumer" }},
  {{ per = "hour", requests = 1000000000000, by = "consumer" }},
] }}

{quota}"""

QUOTA = """
[[api.chain]]
plugin = "quota"
grants = ["counters"]
config = { calls = 1000000000000, period = "month", by = "consumer" }
"""

GATEWAY = """schema = 1
data-dir = "data-{name}"
policies = ["{manifest}"]

[[listener]]
name = "bench"
address = "127.0.0.1:{port}"

[plugins]
dirs = ["{plugins}"]
cache-dir = "plugin-cache"

[reload]
watch = false

[limits]
step-timeout = "200ms"
{cluster}"""

# The default 50 ms bound is for a Redis on its own machine: here, with
# every process saturating two cores, a call can queue that long, and the
# quota (closed) would refuse it. The benchmark measures the served path.
CLUSTER = """
[cluster]
url = "redis://127.0.0.1:{redis_port}"
command-timeout = "1s"
"""


class Gateway:
    def __init__(self, name, port, conf):
        self.name = name
        self.port = port
        self.conf = conf
        self.proc = None
        self.steps = 0


def pause(procs_, on):
    for p in procs_:
        os.kill(p.pid, signal.SIGSTOP if on else signal.SIGCONT)


def get_ok(port):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", PATH, headers=dict(HEADERS))
        r = conn.getresponse()
        body = r.read()
    finally:
        conn.close()
    if r.status != 200:
        raise BenchError(f"GET {PATH} on {port} answered {r.status}: {body[:300]!r}")


def wrk(port, connections, duration, latency=False):
    args = ["wrk", "-t", "1", "-c", str(connections), "-d", f"{duration}s", "--timeout", "5s"]
    if latency:
        args.append("--latency")
    for k, v in HEADERS:
        args += ["-H", f"{k}: {v}"]
    args.append(f"http://127.0.0.1:{port}{PATH}")
    out = subprocess.run(args, capture_output=True, text=True, timeout=duration + 60)
    text = out.stdout + out.stderr
    if out.returncode != 0:
        raise BenchError(f"wrk against {port} failed:\n{text}")
    return parse_wrk(text, latency)


def parse_wrk(text, latency):
    """Requests (and with `latency`, p50 and p99 in µs) from wrk's output;
    a failed request (non-2xx, socket error) fails the run."""
    m = re.search(r"(\d+) requests in", text)
    if not m:
        raise BenchError(f"wrk printed no request count:\n{text}")
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    errs = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if bad or errs:
        raise BenchError(f"wrk: failed requests:\n{text}")
    res = {"requests": int(m.group(1))}
    if latency:
        for p in ("50", "99"):
            lm = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)\s*$", text, re.M)
            if not lm:
                raise BenchError(f"wrk --latency printed no {p}%:\n{text}")
            scale = {"us": 1.0, "ms": 1000.0, "s": 1e6}[lm.group(2)]
            res[f"p{p}"] = float(lm.group(1)) * scale
    return res


def redis_calls(port):
    """Scripts Redis has run for the gateways (`EVALSHA`, and `EVAL` when
    a connection first meets a script): their round trips. Commandstats
    also counts the commands the scripts call inside Redis; those are not
    round trips."""
    out = subprocess.run(["redis-cli", "-p", str(port), "INFO", "commandstats"],
                         capture_output=True, text=True, check=True).stdout
    return parse_calls(out)


def parse_calls(text):
    total = 0
    for m in re.finditer(r"^cmdstat_(\w+):calls=(\d+)", text, re.M):
        if m.group(1) in ("evalsha", "eval"):
            total += int(m.group(2))
    return total


def throughput(gws, redis, duration):
    """All of `gws` loaded at once; requests/s in all and CPU s per request
    of the gateways and Redis."""
    pids = [g.proc.pid for g in gws] + ([redis.pid] if redis else [])
    cpu0 = cpu_seconds(pids)
    t0 = time.monotonic()
    results = [None] * len(gws)
    per = CONNECTIONS // len(gws)

    def one(i, g):
        try:
            results[i] = wrk(g.port, per, duration)
        except BenchError as e:
            results[i] = e

    threads = [threading.Thread(target=one, args=(i, g)) for i, g in enumerate(gws)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - t0
    cpu = cpu_seconds(pids) - cpu0
    for r in results:
        if isinstance(r, BenchError):
            raise r
    requests = sum(r["requests"] for r in results)
    # wrk's own runs are `duration` long; the threads' start-up is not load.
    return {"rps": requests / duration, "per_node": requests / duration / len(gws),
            "cpu_us": cpu / requests * 1e6, "requests": requests, "elapsed": elapsed}


def med(values):
    return statistics.median(values)


def span(values, digits=0, suffix=""):
    f = f"{{:,.{digits}f}}"
    return (f"{f.format(med(values))}{suffix} ({f.format(min(values))}–"
            f"{f.format(max(values))})")


def report(rounds, meta):
    def col(kind, field):
        return [r[kind][field] for r in rounds]

    one_tp, three_tp, per_node = col("one", "rps"), col("three", "rps"), col("three", "per_node")
    ratio_total = [r["three"]["rps"] / r["one"]["rps"] for r in rounds]
    ratio_node = [r["three"]["per_node"] / r["one"]["rps"] for r in rounds]
    cpu_one, cpu_three = col("one", "cpu_us"), col("three", "cpu_us")
    cpu_ratio = [r["three"]["cpu_us"] / r["one"]["cpu_us"] for r in rounds]
    added = [r["lat_three"]["p50"] - r["lat_one"]["p50"] for r in rounds]
    added_rl = [r["lat_three_rl"]["p50"] - r["lat_one_rl"]["p50"] for r in rounds]
    calls = [r["redis_per_request"] for r in rounds]
    n = len(rounds)
    lines = [
        START,
        "",
        f"One gateway without `[cluster]` against three sharing one Redis "
        f"(`tests/bench/run --cluster`; {n} round(s) of {meta['duration']} s, "
        f"{meta['cpus']} CPUs, {meta['date']}). Chain: key-auth → rate-limit (a second's and an "
        "hour's limit) → quota, every call "
        "counted and let through; on one node the rate limit counts in memory and the quota in "
        "the node's store (sled, a durable write per call), on three both count in Redis (AOF, "
        "`appendfsync everysec`). Medians with min–max; ratios within each round against the one "
        "node of the same round.",
        "",
        "| | 1 node, sled | 3 nodes, Redis | ratio |",
        "|---|---|---|---|",
        f"| throughput, all nodes (req/s) | {span(one_tp)} | {span(three_tp)} | "
        f"{span(ratio_total, 2, '×')} |",
        f"| throughput per node (req/s) | {span(one_tp)} | {span(per_node)} | "
        f"{span(ratio_node, 2, '×')} |",
        f"| CPU per request, gateways + Redis (µs) | {span(cpu_one, 1)} | "
        f"{span(cpu_three, 1)} | {span(cpu_ratio, 2, '×')} |",
        f"| latency p50, one connection (µs) | {span(col('lat_one', 'p50'))} | "
        f"{span(col('lat_three', 'p50'))} | |",
        f"| latency p99, one connection (µs) | {span(col('lat_one', 'p99'))} | "
        f"{span(col('lat_three', 'p99'))} | |",
        f"| the rate limit alone (key-auth → rate-limit): p50 (µs) | "
        f"{span(col('lat_one_rl', 'p50'))} | {span(col('lat_three_rl', 'p50'))} | |",
        f"| the rate limit alone: p99 (µs) | {span(col('lat_one_rl', 'p99'))} | "
        f"{span(col('lat_three_rl', 'p99'))} | |",
        "",
        f"A Redis round trip adds **{med(added_rl):+,.0f} µs** per request at the median "
        f"({min(added_rl):+,.0f} to {max(added_rl):+,.0f}) to the rate limit alone (in memory "
        f"on one node); for the whole chain the difference is {med(added):+,.0f} µs "
        f"({min(added):+,.0f} to {max(added):+,.0f}), where one node pays a durable write to its "
        f"store for the quota instead. {med(calls):.2f} Redis round trips per request (one "
        "script for the rate limit's two limits, one for the quota). "
        f"This machine has {meta['cpus']} CPUs for six gateways, Redis, the upstream and the "
        "load generators: the three nodes' total measures what Redis costs, not how far three "
        "machines scale.",
        "",
        END,
    ]
    return "\n".join(lines) + "\n"


def write_doc(md, doc=DOC):
    write_section(md, START, END, "Cluster mode: one node against three with Redis", doc)


def bench(a, procs):
    tmp = a.tmp
    env = {"TOLLGATE_LOG": GATEWAY_LOG}
    digest = subprocess.run([TOLLGATE, "hash-key", KEY], capture_output=True, text=True,
                            check=True).stdout.strip()
    up_port = free_port()
    up = procs.spawn("upstream", [TOLLGATE, "demo-upstream", "--listen", f"127.0.0.1:{up_port}"],
                     "direct", env)
    procs.wait_ready(up, up_port, "upstream", os.path.join(tmp, "upstream.log"))

    redis_port = free_port()
    os.makedirs(os.path.join(tmp, "redis"))
    redis = procs.spawn("redis", [
        "redis-server", "--port", str(redis_port), "--bind", "127.0.0.1",
        "--dir", os.path.join(tmp, "redis"), "--save", "", "--appendonly", "yes",
        "--appendfsync", "everysec", "--daemonize", "no"], "redis")
    procs.wait_ready(redis, redis_port, "redis", os.path.join(tmp, "redis.log"))

    for manifest, quota in (("api.toml", QUOTA), ("api-rl.toml", "")):
        with open(os.path.join(tmp, manifest), "w") as f:
            f.write(MANIFEST.format(digest=digest, up_port=up_port, quota=quota))
    # (name, manifest, steps, on Redis): the three-step chain on one node
    # and on three; the rate limit alone on one node of each kind (its
    # latency: the Redis round trip against the in-memory count).
    specs = ([("sled", "api.toml", 3, False)]
             + [(f"redis-{i}", "api.toml", 3, True) for i in range(1, NODES + 1)]
             + [("memory-rl", "api-rl.toml", 2, False), ("redis-rl", "api-rl.toml", 2, True)])
    gws = []
    for name, manifest, steps, on_redis in specs:
        port = free_port()
        cluster = CLUSTER.format(redis_port=redis_port) if on_redis else ""
        conf = os.path.join(tmp, f"{name}.toml")
        with open(conf, "w") as f:
            f.write(GATEWAY.format(name=name, port=port, plugins=PLUGINS, cluster=cluster,
                                   manifest=manifest))
        check = subprocess.run([TOLLGATE, "check", conf], capture_output=True, text=True)
        if check.returncode != 0:
            raise BenchError(f"tollgate check {conf} failed:\n{check.stdout}{check.stderr}")
        g = Gateway(name, port, conf)
        g.steps = steps
        gws.append(g)
    # One after the other: the first compiles the plugins into the shared
    # cache-dir, the others load them from it.
    for g in gws:
        g.proc = procs.spawn(g.name, [TOLLGATE, "run", "--config", g.conf], "tollgate", env)
        logpath = os.path.join(tmp, f"{g.name}.log")
        procs.wait_ready(g.proc, g.port, g.name, logpath)
        deadline = time.time() + 300
        while open(logpath, errors="replace").read().count("configured snapshot ready") < g.steps:
            if g.proc.poll() is not None or time.time() > deadline:
                raise BenchError(f"{g.name}: snapshots not ready:\n" + tail(logpath))
            time.sleep(0.1)
        for _ in range(50):
            get_ok(g.port)
    one, three, memory_rl, redis_rl = gws[0], gws[1:NODES + 1], gws[-2], gws[-1]
    everything = [g.proc for g in gws] + [redis]

    rounds = []
    kinds = ["one", "three", "lat_one", "lat_three", "lat_one_rl", "lat_three_rl"]
    for r in range(a.rounds):
        res = {}
        order = kinds[r % len(kinds):] + kinds[:r % len(kinds)]
        for kind in order:
            pause(everything, True)
            if kind == "one":
                pause([one.proc], False)
                res[kind] = throughput([one], None, a.duration)
            elif kind == "three":
                pause([redis] + [g.proc for g in three], False)
                before = redis_calls(redis_port)
                res[kind] = throughput(three, redis, a.duration)
                res["redis_per_request"] = (
                    (redis_calls(redis_port) - before) / res[kind]["requests"])
            else:
                g = {"lat_one": one, "lat_three": three[0], "lat_one_rl": memory_rl,
                     "lat_three_rl": redis_rl}[kind]
                pause([g.proc] + ([redis] if "three" in kind else []), False)
                res[kind] = wrk(g.port, 1, a.duration, latency=True)
            pause(everything, False)
        log(f"round {r + 1}: 1 node {res['one']['rps']:,.0f} req/s, 3 nodes "
            f"{res['three']['rps']:,.0f} req/s ({res['three']['per_node']:,.0f} per node); "
            f"p50 {res['lat_one']['p50']:,.0f} µs against {res['lat_three']['p50']:,.0f} µs, "
            f"rate limit alone {res['lat_one_rl']['p50']:,.0f} µs against "
            f"{res['lat_three_rl']['p50']:,.0f} µs; "
            f"{res['redis_per_request']:.2f} Redis round trips per request")
        rounds.append(res)
    for g in gws:
        if g.proc.poll() is not None:
            raise BenchError(f"{g.name} exited during the run:\n"
                             + tail(os.path.join(tmp, f"{g.name}.log")))
    meta = {"duration": a.duration, "cpus": os.cpu_count(),
            "date": time.strftime("%Y-%m-%d")}
    md = report(rounds, meta)
    print(md)
    if a.write:
        write_doc(md)
        log(f"wrote {DOC}")
    return 0


def main():
    return script_main(__doc__, bench, [TOLLGATE, os.path.join(PLUGINS, "quota.wasm")], rounds=5)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as e:
        log(f"error: {e}")
        sys.exit(1)

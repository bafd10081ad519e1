#!/usr/bin/env python3
"""Tollgate against nginx and haproxy, end to end on loopback (issue 5).

Started by `tests/bench/run`, which installs the peers, builds the release
binary and the plugins, raises the open-file limit, makes the temporary
folder and kills (by PID) whatever this script leaves behind.

One fast upstream (`tollgate demo-upstream`) and every peer run at once on
127.0.0.1; each variant is measured in every round, in an order that rotates
from round to round:

- saturation throughput: `wrk`, as fast as the proxy answers, with the CPU
  time of the proxy process (utime + stime from /proc/PID/stat) over the
  run divided by the requests it served;
- fixed rates (10k and 20k requests/s): `h2load --rps` with its per-request
  log; p50/p99/p99.9 minus the direct upstream's in the same round, the
  achieved rate, and CPU per request at that rate;
- memory, once after the rounds: peak RSS (VmHWM) and RSS with 1,000 open
  keep-alive connections that have each had one response.

Tollgate gateways that are not being measured are paused (SIGSTOP) so that
their idle timer threads do not load the machine; before every measurement
the machine is checked to be idle. Results: medians over the rounds with
min-max, ratios taken within each round. The markdown goes to stdout and,
in full runs, into docs/performance.md between the bench:peers markers.

With `--baseline DIR` (a saved build: `DIR/tollgate` and `DIR/plugins/*.wasm`)
the 0-step and 5-step (cache miss) gateways are also started from that build
("baseline, ..." variants), each measured next to its current-build twin in
every round, and the report compares the two (current / baseline, per round)
with a verdict: no regression when the median throughput ratio is >= 0.95
and the median CPU-per-request ratio <= 1.05.

Python 3 standard library only.
"""

import argparse
import datetime
import http.client
import math
import os
import re
import resource
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOLLGATE = os.path.join(ROOT, "target", "release", "tollgate")
PLUGINS = os.path.join(ROOT, "plugins", "target", "wasm32-wasip2", "release")
DOC = os.path.join(ROOT, "docs", "performance.md")
START = "<!-- bench:peers:start -->"
END = "<!-- bench:peers:end -->"

KEY = "bench-key-0123456789"
PATH = "/pets/7"
# The same request headers for every tool and variant (wrk and h2load add
# Host; h2load also its own accept-encoding).
HEADERS = [
    ("x-api-key", KEY),
    ("user-agent", "tollgate-bench/1"),
    ("accept", "application/json"),
]
RATES = (10_000, 20_000)
H2LOAD_PROCESSES = 5         # h2load processes per fixed-rate run, started staggered
WRK_CONNECTIONS = 64
SUSTAINED = 0.95            # a fixed rate counts as sustained at >= 95% of it
BUSY_LIMIT = 0.20           # idle check: at most 20% of all CPUs busy
KEEPALIVE_CONNECTIONS = 1000
RSS_TARGET_MB = 100.0


def log(msg):
    print(msg, file=sys.stderr, flush=True)


class BenchError(Exception):
    pass


# ---------------------------------------------------------------------------
# Processes


class Procs:
    """Every process this script starts. Each is recorded with its PID in
    `<tmp>/pids` (for the cleanup trap in `run`) and stopped by PID."""

    def __init__(self, tmp):
        self.tmp = tmp
        self.list = []  # (name, Popen, log path, kind)
        self.pidfile = os.path.join(tmp, "pids")

    def record(self, pid):
        """Note `pid` with its start time, which `run` compares before
        killing a leftover, so that a reused PID is never hit."""
        start = proc_starttime(pid)
        if start is not None:
            with open(self.pidfile, "a") as f:
                f.write(f"{pid} {start}\n")

    def unrecord(self, pids):
        try:
            with open(self.pidfile) as f:
                rows = f.readlines()
        except OSError:
            return
        with open(self.pidfile, "w") as f:
            f.writelines(r for r in rows if int(r.split()[0]) not in pids)

    def spawn(self, name, argv, kind, env=None):
        logpath = os.path.join(self.tmp, f"{name}.log")
        out = open(logpath, "wb")
        full_env = dict(os.environ)
        full_env.update(env or {})
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                             env=full_env, start_new_session=True, cwd=self.tmp)
        out.close()
        self.list.append((name, p, logpath, kind))
        self.record(p.pid)
        return p

    def wait_ready(self, p, port, name, logpath, timeout=300):
        deadline = time.time() + timeout
        while True:
            if p.poll() is not None:
                raise BenchError(f"{name} exited ({p.returncode}) before listening on {port}:\n"
                                 + tail(logpath))
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                return
            except OSError:
                pass
            if time.time() > deadline:
                raise BenchError(f"{name} did not listen on {port} within {timeout} s:\n"
                                 + tail(logpath))
            time.sleep(0.05)

    def stop(self, p, kind):
        if p.poll() is not None:
            return
        children = child_pids(p.pid)
        try:
            os.kill(p.pid, signal.SIGCONT)
            # nginx's master stops its workers on SIGTERM; the others get SIGKILL.
            os.kill(p.pid, signal.SIGTERM if kind == "nginx" else signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.kill(p.pid, signal.SIGKILL)
            p.wait()
        for c in children:
            try:
                os.kill(c, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.unrecord({p.pid, *children})

    def stop_all(self):
        for name, p, _, kind in reversed(self.list):
            try:
                self.stop(p, kind)
            except Exception as e:  # keep stopping the others
                log(f"stopping {name} (pid {p.pid}): {e}")
        self.list = []


def tail(path, n=30):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except OSError:
        return ""


def proc_starttime(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    return stat[stat.rfind(")") + 2:].split()[19]  # field 22


def child_pids(pid):
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        if int(fields[1]) == pid:
            out.append(int(d))
    return out


def write_section(md, start, end, heading, doc):
    """Put `md` (which starts with `start` and ends with `end`) in place of
    the section between those markers in `doc`, or add it at the end under
    `## heading`."""
    with open(doc) as f:
        text = f.read()
    if start in text and end in text:
        before = text[:text.index(start)]
        after = text[text.index(end) + len(end) + 1:]
        text = before + md + after
    else:
        text = text.rstrip("\n") + f"\n\n## {heading}\n\n" + md
    with open(doc, "w") as f:
        f.write(text)


def script_main(doc, bench_fn, needs, rounds=5):
    """The command line of the side benchmarks (cluster.py, protocols.py):
    `--tmp` from tests/bench/run, `--quick` (1 round of 2 s, prints only),
    `--rounds`, `--duration` (or ROUNDS, DURATION), `--[no-]write-docs`;
    checks that the files in `needs` exist, raises the open-files limit,
    and runs `bench_fn(args, procs)`, stopping every process it started."""
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    ap.add_argument("--tmp", required=True, help="a temporary folder (made by tests/bench/run)")
    ap.add_argument("--quick", action="store_true", help="1 round of 2 s; prints only")
    ap.add_argument("--rounds", type=int, default=int(os.environ.get("ROUNDS", str(rounds))))
    ap.add_argument("--duration", type=int, default=int(os.environ.get("DURATION", "4")))
    ap.add_argument("--write-docs", dest="write", action="store_true", default=None)
    ap.add_argument("--no-write-docs", dest="write", action="store_false")
    a = ap.parse_args()
    if a.quick:
        a.rounds = int(os.environ.get("ROUNDS", "1"))
        a.duration = int(os.environ.get("DURATION", "2"))
    if a.write is None:
        a.write = not a.quick
    if a.rounds < 1 or a.duration < 1:
        raise BenchError("need at least 1 round of at least 1 s")
    for f in needs:
        if not os.path.exists(f):
            raise BenchError(f"missing {f}: build it (tests/bench/run does, without --no-build)")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 4096:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    procs = Procs(a.tmp)
    try:
        return bench_fn(a, procs)
    finally:
        procs.stop_all()


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids):
    """utime + stime of the processes (all their threads), in seconds."""
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
        fields = stat[stat.rfind(")") + 2:].split()
        total += int(fields[11]) + int(fields[12])  # fields 14 and 15
    return total / CLK_TCK


def status_kb(pids, field):
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    total += int(line.split()[1])
    return total


def machine_busy(seconds):
    """Fraction of all CPUs busy over `seconds`, from /proc/stat."""
    def sample():
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        idle = v[3] + v[4]  # idle + iowait
        return sum(v[:8]), idle  # without guest (already in user)
    t0, i0 = sample()
    time.sleep(seconds)
    t1, i1 = sample()
    return 1.0 - (i1 - i0) / max(1, t1 - t0)


# ---------------------------------------------------------------------------
# Variants


class Variant:
    def __init__(self, name, kind, port, proc=None, chain_note=""):
        self.name = name
        self.kind = kind        # direct | nginx | haproxy | tollgate
        self.port = port
        self.proc = proc
        self.chain_note = chain_note
        self.cache = None       # None, "MISS" or "HIT": the x-cache the variant must answer
        self.access_log = None  # the access-log sink, emptied before each run
        self.conf = None        # tollgate: the gateway file
        self.dir = None         # tollgate: its folder
        self.steps = 0          # tollgate: steps in its chain (each logs its snapshot)
        self.binary = TOLLGATE  # tollgate: the binary it runs (the baseline's for baseline variants)
        self.baseline = False   # tollgate: started from the --baseline build

    def pids(self):
        if self.kind == "nginx":
            return [self.proc.pid] + child_pids(self.proc.pid)
        return [self.proc.pid]


RATE_LIMIT = '{ per = "second", requests = 10000000, by = "consumer" }'
STEP = {
    "noop": '[[api.chain]]\nplugin = "noop"\n',
    "access-log": ('[[api.chain]]\nplugin = "access-log"\ngrants = ["timing", "sink"]\n'
                   'config = { headers = ["user-agent"] }\n'),
    "key-auth": '[[api.chain]]\nplugin = "key-auth"\ngrants = ["consumers"]\n',
    "rate-limit": ('[[api.chain]]\nplugin = "rate-limit"\ngrants = ["counters"]\n'
                   f'config = {{ limits = [{RATE_LIMIT}] }}\n'),
    # Misses every time: the step keys and looks up every call, buffers the
    # response and checks it, but stores only status 203 (the upstream
    # answers 200), so nothing is ever found.
    "cache-miss": ('[[api.chain]]\nplugin = "cache"\ngrants = ["cache"]\n'
                   'config = { ttl = 60, cache-authorized = true, statuses = [203] }\n'),
    "cache-hit": ('[[api.chain]]\nplugin = "cache"\ngrants = ["cache"]\n'
                  'config = { ttl = 86400, cache-authorized = true }\n'),
    "transform": ('[[api.chain]]\nplugin = "transform"\n'
                  'config = { request = { headers = { set = { "x-api-version" = "1" } } }, '
                  'response = { headers = { set = { "x-served-by" = "tollgate" } } } }\n'),
    # The same step under a condition that is false for the benchmark's GETs:
    # what a skipped step costs (the evaluation only, no instance).
    "transform-when-false": ('[[api.chain]]\nplugin = "transform"\n'
                             'when = \'request.method == "POST" && "x-debug" in request.headers\'\n'
                             'config = { request = { headers = { set = { "x-api-version" = "1" } } }, '
                             'response = { headers = { set = { "x-served-by" = "tollgate" } } } }\n'),
}

# (name, steps, x-cache expected). The 5-step chain is in the demo's order:
# access-log first (its response phase runs last), cache after the checks.
TOLLGATE_VARIANTS = [
    ("tollgate, 0 steps", [], None),
    ("tollgate, 1 noop step", ["noop"], None),
    # A step that runs against the same step skipped by a false `when`.
    ("tollgate, 1 transform step", ["transform"], None),
    ("tollgate, 1 transform step, when false", ["transform-when-false"], None),
    ("tollgate, key-auth", ["key-auth"], None),
    ("tollgate, key-auth + rate-limit", ["key-auth", "rate-limit"], None),
    ("tollgate, 5 steps (cache miss)",
     ["access-log", "key-auth", "rate-limit", "cache-miss", "transform"], "MISS"),
    ("tollgate, 5 steps (cache hit)",
     ["access-log", "key-auth", "rate-limit", "cache-hit", "transform"], "HIT"),
    # The same chain with `[plugins] snapshots = false`: every call configures
    # each step's fresh instance (what configured snapshots save).
    ("tollgate, 5 steps (cache miss), no snapshots",
     ["access-log", "key-auth", "rate-limit", "cache-miss", "transform"], "MISS"),
    # The same chain with `[limits] step-isolation = "worker"`: each worker
    # thread reuses a warm instance of each step instead of a fresh one.
    ("tollgate, 5 steps (cache miss), worker",
     ["access-log", "key-auth", "rate-limit", "cache-miss", "transform"], "MISS"),
    # The same chain with `[plugins] reset = false`: `request` isolation
    # with a fresh instance per request instead of one reset in the guest.
    ("tollgate, 5 steps (cache miss), fresh",
     ["access-log", "key-auth", "rate-limit", "cache-miss", "transform"], "MISS"),
    # What the gateway shows of itself (issue 17): the default counts every
    # call for `GET /metrics`; "unobserved" turns that off
    # (`[metrics] enabled = false`); "analytics" also writes every call to
    # the analytics store (`[analytics]`).
    ("tollgate, 0 steps, unobserved", [], None),
    ("tollgate, 0 steps, analytics", [], None),
    ("tollgate, 5 steps (cache miss), unobserved",
     ["access-log", "key-auth", "rate-limit", "cache-miss", "transform"], "MISS"),
    ("tollgate, 5 steps (cache miss), analytics",
     ["access-log", "key-auth", "rate-limit", "cache-miss", "transform"], "MISS"),
    # Every call traced (`[otel]`, `sample-ratio = 1.0`) to a collector that
    # is not there: what a dead collector costs the requests.
    ("tollgate, 5 steps (cache miss), traced to a dead collector",
     ["access-log", "key-auth", "rate-limit", "cache-miss", "transform"], "MISS"),
]
NO_SNAPSHOTS = "no snapshots"
WORKER = ", worker"
FRESH = ", fresh"
GW0 = "tollgate, 0 steps"
GW5 = "tollgate, 5 steps (cache miss)"
GW5W = GW5 + WORKER
GW5F = GW5 + FRESH
GWT = "tollgate, 1 transform step"
GWT_SKIPPED = GWT + ", when false"
UNOBSERVED = ", unobserved"
ANALYTICS = ", analytics"
DEAD_OTEL = ", traced to a dead collector"
# The most throughput metrics (and metrics with analytics) may cost against
# the same chain unobserved (median of the rounds' ratios).
OBSERVE_FLOOR = 0.97
# With --baseline: the variants also started from the saved build, each with
# its current-build twin; the comparison takes current / baseline per round.
BASELINE_OF = {GW0: "baseline, 0 steps", GW5: "baseline, 5 steps (cache miss)"}
THROUGHPUT_FLOOR = 0.95     # no regression: current / baseline throughput >= this (median)
CPU_CEILING = 1.05          # and current / baseline CPU per request <= this (median)
# Every info line of the gateways (tollgate and any tollgate_* crate), so that
# the "configured snapshot ready" lines are seen wherever the snapshot code
# lives in the build being measured; plugins' own logs stay at warn. Nothing
# at info is logged per request.
GATEWAY_LOG = "warn,tollgate=info,tollgate::plugin=warn"


def short_name(name):
    """A variant's name without its build prefix ("tollgate, "/"baseline, ")."""
    for prefix in ("tollgate, ", "baseline, "):
        if name.startswith(prefix):
            return name[len(prefix):]
    return name


def select_variants(only, names):
    """The names `--only` picks from `names` (direct is not among them).

    Each comma-separated entry picks exactly the variant it names when it is
    a whole name or a name without its "tollgate, "/"baseline, " prefix
    ("5 steps (cache miss)" is that variant, not also its "no snapshots"
    sibling; "0 steps" is the current and the baseline 0-step gateway); any
    other entry picks every name that contains it ("key", "5 steps",
    "baseline"). Entries are split at commas not followed by a space, as
    names hold ", " ("tollgate, 0 steps"); an entry with ", " that picks
    nothing is tried as its ", "-separated parts ("nginx, haproxy"). A
    baseline variant and its current-build twin are always picked together,
    so that the comparison has both sides. An entry that picks nothing is an
    error (a typo would otherwise measure only direct)."""
    if only is None:
        return list(names)

    def pick(entry):
        exact = {n for n in names if entry in (n, short_name(n))}
        return exact or {n for n in names if entry in n}
    picked = set()
    for entry in (e.strip() for e in re.split(r",(?! )", only)):
        if not entry:
            continue
        hits = pick(entry)
        if not hits and ", " in entry:
            parts = [p.strip() for p in entry.split(", ") if p.strip()]
            hits = set().union(*map(pick, parts)) if all(map(pick, parts)) else set()
        if not hits:
            raise BenchError(f"--only: {entry!r} matches no variant; the variants: "
                             + "; ".join(names))
        picked |= hits
    for cur, base in BASELINE_OF.items():
        if cur in names and base in names and (cur in picked or base in picked):
            picked |= {cur, base}
    return [n for n in names if n in picked]


def gateway_variants(baseline):
    """(name, steps, x-cache, baseline?) of every gateway, each baseline
    variant right after its current-build twin."""
    out = []
    for name, steps, xcache in TOLLGATE_VARIANTS:
        out.append((name, steps, xcache, False))
        if baseline and name in BASELINE_OF:
            out.append((BASELINE_OF[name], steps, xcache, True))
    return out


def plugin_files(steps):
    """The .wasm files a chain of STEP names loads."""
    names = {re.search(r'plugin = "([^"]+)"', STEP[s]).group(1) for s in steps}
    return sorted(n.replace("-", "_") + ".wasm" for n in names)


def write_tollgate(dirpath, port, up_port, steps, digest, snapshots=True, plugins=PLUGINS,
                   isolation="request", observe="default"):
    """The gateway file of a variant (and its manifest). `isolation` other
    than the default is written as `[limits] step-isolation`; the default is
    left out, so that a baseline build older than the key still loads it.
    `isolation="fresh"` is `request` with `[plugins] reset = false` (a fresh
    instance per request instead of a reset one). `observe`: "default" (no
    section: metrics on, analytics off), "off" (`[metrics] enabled = false`)
    or "analytics" (`[analytics]` too) or "dead-otel" (every call traced by
    `[otel]` to a port nothing listens on)."""
    os.makedirs(dirpath, exist_ok=True)
    reset = "reset = false\n" if isolation == "fresh" else ""
    limits = "" if isolation in ("request", "fresh") else f'step-isolation = "{isolation}"\n'

    dead = f'endpoint = "http://127.0.0.1:{free_port()}/v1/traces"\n'
    sections = {"default": "", "off": "\n[metrics]\nenabled = false\n",
                "analytics": "\n[analytics]\n",
                "dead-otel": "\n[otel]\n" + dead + "sample-ratio = 1.0\n"}[observe]
    chain = "\n".join(STEP[s] for s in steps)
    with open(os.path.join(dirpath, "api.toml"), "w") as f:
        f.write(f"""schema = 1

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

{chain}""")
    path = os.path.join(dirpath, "tollgate.toml")
    with open(path, "w") as f:
        f.write(f"""schema = 1
data-dir = "data"
policies = ["api.toml"]

[[listener]]
name = "bench"
address = "127.0.0.1:{port}"

[plugins]
dirs = ["{plugins}"]
snapshots = {"true" if snapshots else "false"}
{reset}
[reload]
watch = false

[limits]
step-timeout = "200ms"
{limits}
[access-log]
path = "access.log"
{sections}""")
    return path


def write_nginx(dirpath, port, up_port):
    os.makedirs(os.path.join(dirpath, "tmp"), exist_ok=True)
    path = os.path.join(dirpath, "nginx.conf")
    with open(path, "w") as f:
        f.write(f"""worker_processes auto;
worker_rlimit_nofile 8192;
pid {dirpath}/nginx.pid;
error_log {dirpath}/error.log warn;
events {{ worker_connections 8192; }}
http {{
    access_log off;
    client_body_temp_path {dirpath}/tmp/body;
    proxy_temp_path {dirpath}/tmp/proxy;
    keepalive_timeout 300s;
    keepalive_requests 100000000;
    upstream up {{
        server 127.0.0.1:{up_port};
        keepalive 256;
        keepalive_requests 100000000;
    }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{
            proxy_pass http://up;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
""")
    return path


def write_haproxy(dirpath, port, up_port):
    os.makedirs(dirpath, exist_ok=True)
    path = os.path.join(dirpath, "haproxy.cfg")
    with open(path, "w") as f:
        f.write(f"""global
    maxconn 8000

defaults
    mode http
    timeout connect 2s
    timeout client 300s
    timeout server 30s
    timeout http-keep-alive 300s

frontend fe
    bind 127.0.0.1:{port}
    default_backend be

backend be
    http-reuse always
    server up 127.0.0.1:{up_port}
""")
    return path


# ---------------------------------------------------------------------------
# Requests


def wait_snapshots(v, logpath, timeout=300):
    """Wait until each of the gateway's steps has logged that its configured
    snapshot is ready (host/src/policy/snapshot.rs): until then its calls
    configure a fresh instance each, which is not the path being measured."""
    deadline = time.time() + timeout
    while True:
        text = open(logpath, errors="replace").read() if os.path.exists(logpath) else ""
        if "no configured snapshot" in text:
            raise BenchError(f"{v.name}: a step has no configured snapshot:\n" + tail(logpath))
        if text.count("configured snapshot ready") >= v.steps:
            return
        if v.proc.poll() is not None or time.time() > deadline:
            raise BenchError(f"{v.name}: snapshots not ready within {timeout} s:\n" + tail(logpath))
        time.sleep(0.1)


def check_response(v, prime=False, tries=3):
    """One request as the load tools send it: must be 200 (and, for the
    cache variants, carry the expected X-Cache; `prime`: any). Retried a
    few times, so that one slow answer on a busy machine does not end a
    long run; a variant that keeps failing does."""
    for attempt in range(tries):
        try:
            return check_once(v, prime)
        except (BenchError, OSError, http.client.HTTPException) as e:
            if attempt + 1 == tries:
                raise BenchError(f"{v.name}: {e}") from e
            log(f"  check of {v.name} failed ({e}); retrying")
            time.sleep(1.0)


def check_once(v, prime):
    conn = http.client.HTTPConnection("127.0.0.1", v.port, timeout=5)
    try:
        conn.request("GET", PATH, headers=dict(HEADERS))
        r = conn.getresponse()
        body = r.read()
        xcache = r.getheader("x-cache")
    finally:
        conn.close()
    if r.status != 200:
        raise BenchError(f"GET {PATH} answered {r.status}, not 200: {body[:300]!r}")
    if v.cache and not prime and xcache != v.cache:
        raise BenchError(f"expected X-Cache: {v.cache}, got {xcache!r}")


def run_wrk(v, duration):
    args = ["wrk", "-t", "1", "-c", str(WRK_CONNECTIONS), "-d", f"{duration}s", "--timeout", "5s"]
    for k, val in HEADERS:
        args += ["-H", f"{k}: {val}"]
    args.append(f"http://127.0.0.1:{v.port}{PATH}")
    out = subprocess.run(args, capture_output=True, text=True, timeout=duration + 60)
    text = out.stdout + out.stderr
    m = re.search(r"(\d+) requests in ([\d.]+)(\w+)", text)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
    if out.returncode != 0 or not m or not rps:
        raise BenchError(f"wrk against {v.name} failed:\n{text}")
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    errs = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    return {
        "requests": int(m.group(1)),
        "rps": float(rps.group(1)),
        "non2xx": int(non2xx.group(1)) if non2xx else 0,
        "socket_errors": sum(int(x) for x in errs.groups()) if errs else 0,
        "raw": text,
    }


def percentile(sorted_values, p):
    """Nearest rank."""
    if not sorted_values:
        return float("nan")
    k = max(0, math.ceil(p / 100.0 * len(sorted_values)) - 1)
    return sorted_values[k]


def run_h2load(v, rate, duration, warmup, logfile, pids, upstream_pids):
    """A fixed rate, open-loop as far as h2load goes.

    h2load's `--rps` timer fires at most every 10 ms per connection, and a
    process connects all its clients at once, so one process sends its
    requests in bursts, all connections together, every 10 ms. To spread
    them, the load comes from H2LOAD_PROCESSES processes started 10 ms ÷
    H2LOAD_PROCESSES apart, with one connection per 100 req/s (so that each
    connection has one request due per tick). CPU is read when the first
    process says its main period starts and when the last says it is over
    (h2load prints and flushes those lines), so warm-up is left out of the
    CPU figure as it is of the logs."""
    k = H2LOAD_PROCESSES
    conns = max(k, round(rate / 100))
    per_proc = conns // k
    rps = rate / (per_proc * k)
    lock = threading.Lock()
    state = {"started": 0, "over": 0, "cpu0": None, "cpu1": None, "up0": None, "up1": None}
    outputs = [[] for _ in range(k)]

    def reader(i, p):
        for line in p.stdout:
            outputs[i].append(line)
            with lock:
                if line.startswith("Main benchmark duration is started"):
                    state["started"] += 1
                    if state["started"] == 1:
                        state["cpu0"], state["up0"] = cpu_seconds(pids), cpu_seconds(upstream_pids)
                elif line.startswith("Main benchmark duration is over"):
                    state["over"] += 1
                    if state["over"] == k:
                        state["cpu1"], state["up1"] = cpu_seconds(pids), cpu_seconds(upstream_pids)

    procs, threads, logs = [], [], []
    try:
        for i in range(k):
            log_i = f"{logfile}.{i}"
            logs.append(log_i)
            args = ["h2load", "--h1", "-c", str(per_proc), "-t", "1", "--rps", f"{rps:g}",
                    "-D", f"{duration}s", "--warm-up-time", f"{round(warmup * 1000)}ms",
                    "--log-file", log_i]
            for name, val in HEADERS:
                args += ["-H", f"{name}: {val}"]
            args.append(f"http://127.0.0.1:{v.port}{PATH}")
            p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            procs.append(p)
            t = threading.Thread(target=reader, args=(i, p), daemon=True)
            t.start()
            threads.append(t)
            time.sleep(0.010 / k)
        for p in procs:
            p.wait(timeout=duration + warmup + 60)
        for t in threads:
            t.join(timeout=10)
    except BaseException:
        for p in procs:
            if p.poll() is None:
                p.kill()
        raise
    text = "".join("".join(o) for o in outputs)
    if any(p.returncode != 0 for p in procs) or state["cpu0"] is None or state["cpu1"] is None:
        raise BenchError(f"h2load against {v.name} failed:\n{text}")
    bad_codes = 0
    for m in re.finditer(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", text):
        bad_codes += sum(int(x) for x in m.groups()[1:])
    ok, failed, bad = [], 0, 0
    for log_i in logs:
        with open(log_i) as f:
            for row in f:
                parts = row.split("\t")
                if len(parts) < 3:
                    continue
                status = int(parts[1])
                if 200 <= status < 300:
                    ok.append(int(parts[2]))
                elif status < 0:
                    failed += 1
                else:
                    bad += 1
        os.unlink(log_i)
    ok.sort()
    achieved = len(ok) / duration
    return {
        "achieved": achieved,
        "sustained": achieved >= SUSTAINED * rate,
        "p50": percentile(ok, 50),
        "p99": percentile(ok, 99),
        "p999": percentile(ok, 99.9),
        "cpu_us": (state["cpu1"] - state["cpu0"]) * 1e6 / max(1, len(ok)),
        "up_cpu_us": (state["up1"] - state["up0"]) * 1e6 / max(1, len(ok)),
        "non2xx": max(bad, bad_codes),
        "failed": failed,
        "requests": len(ok),
        "connections": per_proc * k,
    }


def read_response(sock, buf=b""):
    """Read one HTTP/1.1 response from a blocking socket; return (status,
    leftover bytes)."""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise BenchError("connection closed before the response head")
        buf += chunk
    head, rest = buf.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    length, chunked = None, False
    for line in lines[1:]:
        k, _, val = line.partition(":")
        k = k.strip().lower()
        if k == "content-length":
            length = int(val.strip())
        elif k == "transfer-encoding" and "chunked" in val.lower():
            chunked = True
    if chunked:
        while b"0\r\n\r\n" not in rest:
            chunk = sock.recv(65536)
            if not chunk:
                raise BenchError("connection closed in a chunked body")
            rest += chunk
        return status, rest.split(b"0\r\n\r\n", 1)[1]
    length = length or 0
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise BenchError("connection closed in the body")
        rest += chunk
    return status, rest[length:]


def keepalive_rss(v, n):
    """Open n connections one after the other, each with one keep-alive GET
    whose response is read before the next connection opens (so that this
    measures open connections, not n requests in flight at once), keep them
    all open and read the proxy's RSS."""
    req = f"GET {PATH} HTTP/1.1\r\nHost: 127.0.0.1:{v.port}\r\n"
    req += "".join(f"{k}: {val}\r\n" for k, val in HEADERS) + "\r\n"
    req = req.encode()
    socks = []
    try:
        bad = 0
        for _ in range(n):
            s = socket.create_connection(("127.0.0.1", v.port), timeout=30)
            socks.append(s)
            s.sendall(req)
            status, _ = read_response(s)
            if status != 200:
                bad += 1
        time.sleep(1.0)
        # Still open? A closed connection reads as EOF without blocking.
        closed = 0
        for s in socks:
            s.setblocking(False)
            try:
                if s.recv(1) == b"":
                    closed += 1
            except BlockingIOError:
                pass
        rss = status_kb(v.pids(), "VmRSS")
        return rss, closed, bad
    finally:
        for s in socks:
            s.close()


# ---------------------------------------------------------------------------
# Summaries and formatting


def summary(values):
    values = [x for x in values if x is not None and not (isinstance(x, float) and math.isnan(x))]
    if not values:
        return None
    return (statistics.median(values), min(values), max(values))


def fmt(s, digits=0, prefix="", suffix="", sign=False):
    if s is None:
        return "—"
    def one(x):
        t = f"{x:+,.{digits}f}" if sign else f"{x:,.{digits}f}"
        return prefix + t + suffix
    med, lo, hi = s
    if lo == hi:
        return one(med)
    return f"{one(med)} ({one(lo)}–{one(hi)})"


def ratio(s):
    return fmt(s, 2, suffix="×")


def per_round(rounds, fn):
    """fn(r) for every round; None where a figure is missing."""
    out = []
    for r in range(rounds):
        try:
            out.append(fn(r))
        except (TypeError, KeyError, ZeroDivisionError):
            out.append(None)
    return out


def baseline_comparison(rounds, wrk, fixed):
    """The current build against the --baseline build, per BASELINE_OF pair:
    throughput (wrk) and gateway CPU per request as current / baseline,
    taken within each round and summarised; CPU at the lower fixed rate when
    both sustain it in most rounds, else saturated (wrk). Returns the rows
    and the verdict line."""
    rate = RATES[0]
    rows = []
    for cur, base in BASELINE_OF.items():
        row = {"name": short_name(cur), "cur": cur, "base": base, "ok": None, "why": []}
        rows.append(row)
        if cur not in wrk or base not in wrk:
            row["why"].append("not measured")
            continue

        def sustained(n, r):
            return fixed[rate][n][r]["sustained"]

        def most(n):
            return sum(1 for r in range(rounds) if fixed[rate][n][r]
                       and sustained(n, r)) * 2 > rounds
        row["rps"] = [summary(per_round(rounds, lambda r, n=n: wrk[n][r]["rps"]))
                      for n in (cur, base)]
        row["thr"] = summary(per_round(rounds, lambda r: wrk[cur][r]["rps"]
                                       / wrk[base][r]["rps"]))
        if most(cur) and most(base):
            row["basis"] = f"at {rate:,} req/s"
            row["cpu_us"] = [summary(per_round(rounds, lambda r, n=n: fixed[rate][n][r]["cpu_us"]
                                               if sustained(n, r) else None))
                             for n in (cur, base)]
            row["cpu"] = summary(per_round(
                rounds, lambda r: fixed[rate][cur][r]["cpu_us"] / fixed[rate][base][r]["cpu_us"]
                if sustained(cur, r) and sustained(base, r) else None))
        else:
            row["basis"] = f"saturated (wrk): {rate:,} req/s not sustained"
            row["cpu_us"] = [summary(per_round(rounds, lambda r, n=n: wrk[n][r]["cpu_us"]))
                             for n in (cur, base)]
            row["cpu"] = summary(per_round(rounds, lambda r: wrk[cur][r]["cpu_us"]
                                           / wrk[base][r]["cpu_us"]))
        if row["thr"] is None or row["cpu"] is None:
            row["why"].append("no figures")
            continue
        if row["thr"][0] < THROUGHPUT_FLOOR:
            row["why"].append(f"throughput {row['thr'][0]:.2f}× < {THROUGHPUT_FLOOR:.2f}×")
        if row["cpu"][0] > CPU_CEILING:
            row["why"].append(f"CPU per request {row['cpu'][0]:.2f}× > {CPU_CEILING:.2f}×")
        row["ok"] = not row["why"]
    bad = [r for r in rows if r["ok"] is False]
    open_ = [r for r in rows if r["ok"] is None]
    if bad:
        verdict = "regression: " + "; ".join(f"{r['cur']} ({', '.join(r['why'])})" for r in bad)
    elif open_:
        verdict = "not decided: " + "; ".join(f"{r['cur']} ({', '.join(r['why'])})"
                                              for r in open_)
    else:
        verdict = "no regression"
    return {"rows": rows, "verdict": verdict}


def baseline_caveats(rounds, meta):
    """Why the verdict may be noise: too few rounds, or the pairs' runs
    started on a busy machine."""
    out = []
    if rounds < 5:
        out.append(f"{rounds} round(s): too few to judge a few percent (the verdict wants "
                   "a full run, at least 5 rounds).")
    runs = meta.get("noisy_runs", {})
    pair = [n for p in BASELINE_OF.items() for n in p if n in runs]
    busy = sum(runs[n] for n in pair)
    if busy:
        out.append(f"{busy} of {rounds * len(pair) * 3} runs of these variants started on a "
                   f"machine more than {BUSY_LIMIT:.0%} busy.")
    return out


def baseline_section(rounds, wrk, fixed, meta):
    """The markdown of the comparison with the --baseline build."""
    cmp = baseline_comparison(rounds, wrk, fixed)
    b = meta["baseline"]
    L = [f"### Against the baseline build (`--baseline`)", ""]
    L.append(f"Baseline: `{b['dir']}/tollgate` ({b['version']}) with the plugins in "
             f"`{b['dir']}/plugins`, started like the current build's gateway (same "
             "configuration, own data directory) and measured next to it in every round. "
             "Ratios are current ÷ baseline, taken within each round; median (min–max). "
             f"No regression: throughput ratio ≥ {THROUGHPUT_FLOOR:.2f} and CPU ratio ≤ "
             f"{CPU_CEILING:.2f} (medians), for each chain.")
    L.append("")
    L.append("| chain | requests/s, current / baseline | throughput ratio | "
             "gateway CPU µs/req, current / baseline | CPU ratio | CPU measured | result |")
    L.append("|---|---|---|---|---|---|---|")
    for r in cmp["rows"]:
        if "thr" not in r:
            L.append(f"| {r['name']} | not measured | — | — | — | — | n/a |")
            continue
        res = "n/a" if r["ok"] is None else ("no regression" if r["ok"] else
                                             "**regression**")
        L.append(f"| {r['name']} | {fmt(r['rps'][0])} / {fmt(r['rps'][1])} | {ratio(r['thr'])} | "
                 f"{fmt(r['cpu_us'][0], 1)} / {fmt(r['cpu_us'][1], 1)} | {ratio(r['cpu'])} | "
                 f"{r['basis']} | {res} |")
    L.append("")
    L.append(f"**Verdict: {cmp['verdict']}**")
    L.append("")
    caveats = baseline_caveats(rounds, meta)
    if caveats:
        L.append("Not conclusive: " + " ".join(caveats))
        L.append("")
    return L


def version(cmd):
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        text = (out.stdout + out.stderr).strip().splitlines()
        return text[0].strip() if text else "?"
    except OSError:
        return "not found"


# ---------------------------------------------------------------------------
# The run


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tmp", required=True, help="a temporary folder (made by tests/bench/run)")
    ap.add_argument("--quick", action="store_true",
                    help="1 round, short runs; prints only (docs not written)")
    ap.add_argument("--rounds", type=int, default=int(os.environ.get("ROUNDS", "5")))
    ap.add_argument("--duration", type=int, default=int(os.environ.get("DURATION", "4")),
                    help="whole seconds of each measured load run (default 4)")
    ap.add_argument("--write-docs", dest="write", action="store_true", default=None,
                    help="rewrite the section of docs/performance.md (default: unless --quick)")
    ap.add_argument("--no-write-docs", dest="write", action="store_false")
    ap.add_argument("--only", help="comma-separated: measure only these variants (direct "
                                   "always); a whole name (with or without 'tollgate, ') picks "
                                   "that variant, anything else every name containing it; "
                                   "a baseline variant comes with its twin; for trying the script")
    ap.add_argument("--baseline", metavar="DIR",
                    help="also run the 0-step and 5-step (cache miss) gateways from a saved "
                         "build (DIR/tollgate, DIR/plugins/*.wasm) and compare against them")
    a = ap.parse_args()
    if a.quick:
        a.rounds = int(os.environ.get("ROUNDS", "1"))
        a.duration = int(os.environ.get("DURATION", "2"))
    if a.write is None:
        a.write = not a.quick and not a.only
    cfg = {
        "rounds": a.rounds,
        "duration": a.duration,
        "warmup": 0.5,
        "idle_seconds": 0.5 if a.quick else 1.0,
        "idle_tries": 2 if a.quick else 5,
        # Seconds the whole run may spend waiting for a busy machine.
        "idle_budget": 10 if a.quick else 60,
        "prime": 1,
        "quick": a.quick,
    }
    if cfg["rounds"] < 1 or cfg["duration"] < 1:
        raise BenchError("need at least 1 round of at least 1 s")
    if not a.quick and cfg["rounds"] < 5:
        log(f"note: {cfg['rounds']} rounds; the issue asks for at least 5")

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, 65536) if hard != resource.RLIM_INFINITY else 65536
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    if want < KEEPALIVE_CONNECTIONS * 2 + 200:
        raise BenchError(f"open-file limit {want} is too low for "
                         f"{KEEPALIVE_CONNECTIONS} connections")

    for f in (TOLLGATE, os.path.join(PLUGINS, "noop.wasm"), os.path.join(PLUGINS, "cache.wasm")):
        if not os.path.exists(f):
            raise BenchError(f"missing {f}: build it (tests/bench/run does, without --no-build)")
    if a.baseline:
        a.baseline = os.path.abspath(a.baseline)
        check_baseline(a.baseline)

    # The cleanup trap in `run` sends SIGTERM: stop our processes first.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    procs = Procs(a.tmp)
    try:
        return bench(a, cfg, procs)
    finally:
        procs.stop_all()


def check_baseline(d):
    """The saved build --baseline names: its binary and the plugins its
    variants load."""
    binary = os.path.join(d, "tollgate")
    if not (os.path.isfile(binary) and os.access(binary, os.X_OK)):
        raise BenchError(f"--baseline {d}: no executable {binary}")
    steps = {s for name, steps, _ in TOLLGATE_VARIANTS if name in BASELINE_OF for s in steps}
    for f in plugin_files(steps):
        if not os.path.isfile(os.path.join(d, "plugins", f)):
            raise BenchError(f"--baseline {d}: no {os.path.join(d, 'plugins', f)}")


def bench(a, cfg, procs):
    tmp = a.tmp
    # Warnings, and the line each step logs when its configured snapshot is
    # ready (measuring starts only once every step has one).
    env = {"TOLLGATE_LOG": GATEWAY_LOG}
    base_bin = os.path.join(a.baseline, "tollgate") if a.baseline else None
    gateway_specs = gateway_variants(a.baseline)
    wanted = set(select_variants(a.only, ["nginx", "haproxy"]
                                 + [name for name, *_ in gateway_specs]))
    digest = subprocess.run([TOLLGATE, "hash-key", KEY], capture_output=True, text=True,
                            check=True).stdout.strip()

    # --- start everything
    up_port = free_port()
    up = procs.spawn("upstream", [TOLLGATE, "demo-upstream", "--listen", f"127.0.0.1:{up_port}"],
                     "direct", env)
    procs.wait_ready(up, up_port, "upstream", os.path.join(tmp, "upstream.log"))
    direct = Variant("direct", "direct", up_port, up)
    variants = [direct]

    if "nginx" in wanted:
        port = free_port()
        conf = write_nginx(os.path.join(tmp, "nginx"), port, up_port)
        p = procs.spawn("nginx", ["nginx", "-c", conf, "-p", os.path.join(tmp, "nginx"),
                                  "-g", "daemon off;"], "nginx")
        procs.wait_ready(p, port, "nginx", os.path.join(tmp, "nginx.log"))
        for c in child_pids(p.pid):
            procs.record(c)
        variants.append(Variant("nginx", "nginx", port, p))
    if "haproxy" in wanted:
        port = free_port()
        conf = write_haproxy(os.path.join(tmp, "haproxy"), port, up_port)
        p = procs.spawn("haproxy", ["haproxy", "-db", "-f", conf], "haproxy")
        procs.wait_ready(p, port, "haproxy", os.path.join(tmp, "haproxy.log"))
        variants.append(Variant("haproxy", "haproxy", port, p))

    gateways = []
    for name, steps, xcache, is_base in gateway_specs:
        if name not in wanted:
            continue
        port = free_port()
        d = os.path.join(tmp, "gw-" + re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-"))
        snapshots = NO_SNAPSHOTS not in name
        plugins = os.path.join(a.baseline, "plugins") if is_base else PLUGINS
        binary = base_bin if is_base else TOLLGATE
        isolation = ("worker" if name.endswith(WORKER)
                     else "fresh" if name.endswith(FRESH) else "request")
        observe = ("off" if name.endswith(UNOBSERVED)
                   else "analytics" if name.endswith(ANALYTICS)
                   else "dead-otel" if name.endswith(DEAD_OTEL) else "default")
        conf = write_tollgate(d, port, up_port, steps, digest, snapshots, plugins, isolation,
                              observe)
        check = subprocess.run([binary, "check", conf], capture_output=True, text=True)
        if check.returncode != 0:
            raise BenchError(f"{binary} check {conf} failed:\n{check.stdout}{check.stderr}")
        shown = [{"cache-miss": "cache (misses)", "cache-hit": "cache (hits)",
                  "transform-when-false": "transform (when false)"}.get(s, s)
                 for s in steps]
        v = Variant(name, "tollgate", port, chain_note=" → ".join(shown) or "no steps")
        v.cache = xcache
        v.conf = conf
        v.dir = d
        v.steps = len(steps) if snapshots else 0
        v.access_log = os.path.join(d, "access.log") if "access-log" in steps else None
        v.binary = binary
        v.baseline = is_base
        gateways.append(v)
    # Start every gateway twice: the first start compiles the plugins into its
    # data-dir (plugin-cache), so that the measured process's peak RSS is
    # that of serving, not of compiling.
    for phase in ("compile", "serve"):
        for v in gateways:
            slug = os.path.basename(v.dir)
            v.proc = procs.spawn(f"{slug}-{phase}", [v.binary, "run", "--config", v.conf],
                                 "tollgate", env)
        for v in gateways:
            slug = os.path.basename(v.dir)
            logpath = os.path.join(tmp, f"{slug}-{phase}.log")
            procs.wait_ready(v.proc, v.port, v.name, logpath)
            wait_snapshots(v, logpath)
        if phase == "compile":
            for v in gateways:
                procs.stop(v.proc, "tollgate")
                procs.list = [x for x in procs.list if x[1] is not v.proc]
    variants += gateways
    names = [v.name for v in variants]

    def focus(v):
        """Run `v` (and the upstream); pause the other gateways."""
        for g in gateways:
            os.kill(g.proc.pid, signal.SIGCONT if g is v else signal.SIGSTOP)

    noisy = []
    noisy_runs = {n: 0 for n in names}  # per variant: runs started on a busy machine
    budget = [cfg["idle_budget"]]

    def idle_check(label, name):
        """Wait (2 s at a time, a few times, within the run's budget) for
        the machine to be idle; record the run as noisy if it is not."""
        busy = 0.0
        for attempt in range(cfg["idle_tries"]):
            busy = machine_busy(cfg["idle_seconds"])
            if busy <= BUSY_LIMIT:
                return
            if attempt + 1 < cfg["idle_tries"] and budget[0] >= 2.0:
                budget[0] -= 2.0
                time.sleep(2.0)
            else:
                break
        noisy.append((label, busy))
        noisy_runs[name] += 1
        log(f"  noisy: {busy:.0%} of the CPUs busy before {label}")

    def reset_logs(v):
        if v.access_log and os.path.exists(v.access_log):
            os.truncate(v.access_log, 0)

    # --- check and warm up every variant
    log(f"checking and warming up {len(variants)} variants")
    for v in variants:
        focus(v)
        check_response(v, prime=True)   # a cache-hit variant stores its entry here
        run_wrk(v, cfg["prime"])
        check_response(v)
        reset_logs(v)

    # --- rounds
    D = cfg["duration"]
    wrk = {n: [None] * cfg["rounds"] for n in names}
    fixed = {r: {n: [None] * cfg["rounds"] for n in names} for r in RATES}
    problems = []
    per_run = D * 3 + cfg["warmup"] * 2 + cfg["idle_seconds"] * 3 + 0.6
    est = cfg["rounds"] * len(variants) * per_run
    log(f"{cfg['rounds']} round(s) × {len(variants)} variants, about {est / 60:.1f} min")
    t_start = time.monotonic()
    for r in range(cfg["rounds"]):
        order = variants[r % len(variants):] + variants[:r % len(variants)]
        if r % 2:
            # A baseline variant sits right after its twin in the list: swap
            # the two in odd rounds, so that neither always runs first.
            at = {v.name: i for i, v in enumerate(order)}
            for cur, base in BASELINE_OF.items():
                if cur in at and base in at:
                    i, j = at[cur], at[base]
                    order[i], order[j] = order[j], order[i]
        log(f"round {r + 1}/{cfg['rounds']}: " + ", ".join(v.name for v in order))
        for kind in ["wrk"] + list(RATES):
            for v in order:
                focus(v)
                check_response(v)
                reset_logs(v)
                label = f"{v.name}, {kind if kind == 'wrk' else f'{kind} req/s'}, round {r + 1}"
                idle_check(label, v.name)
                if kind == "wrk":
                    c0, u0 = cpu_seconds(v.pids()), cpu_seconds(direct.pids())
                    res = run_wrk(v, D)
                    c1, u1 = cpu_seconds(v.pids()), cpu_seconds(direct.pids())
                    res["cpu_us"] = (c1 - c0) * 1e6 / max(1, res["requests"])
                    res["up_cpu_us"] = (u1 - u0) * 1e6 / max(1, res["requests"])
                    wrk[v.name][r] = res
                    if res["non2xx"] or res["socket_errors"]:
                        problems.append(f"{label}: wrk saw {res['non2xx']} non-2xx responses and "
                                        f"{res['socket_errors']} socket errors")
                        log("  PROBLEM: " + problems[-1])
                    cpu = res["up_cpu_us"] if v is direct else res["cpu_us"]
                    log(f"  {v.name:34} wrk {res['rps']:10,.0f} req/s  {cpu:7.1f} µs CPU/req")
                else:
                    logfile = os.path.join(tmp, "h2load.log")
                    res = run_h2load(v, kind, D, cfg["warmup"], logfile, v.pids(), direct.pids())
                    fixed[kind][v.name][r] = res
                    if res["non2xx"]:
                        problems.append(f"{label}: h2load saw {res['non2xx']} non-2xx responses")
                        log("  PROBLEM: " + problems[-1])
                    log(f"  {v.name:34} {kind:>6} req/s: achieved {res['achieved']:9,.0f}  "
                        f"p50 {res['p50']:7,} p99 {res['p99']:7,} p99.9 {res['p999']:7,} µs")
    elapsed = time.monotonic() - t_start

    # --- memory
    log("memory: peak RSS, then RSS with 1,000 keep-alive connections")
    mem = {}
    for v in variants:
        focus(v)
        hwm = status_kb(v.pids(), "VmHWM")
        rss_idle = status_kb(v.pids(), "VmRSS")
        try:
            rss, closed, bad = keepalive_rss(v, KEEPALIVE_CONNECTIONS)
        except (BenchError, OSError) as e:
            problems.append(f"{v.name}: the {KEEPALIVE_CONNECTIONS:,}-connection test failed: {e}")
            log("  PROBLEM: " + problems[-1])
            rss, closed, bad = None, 0, 0
        hwm_after = status_kb(v.pids(), "VmHWM")
        mem[v.name] = {"hwm": hwm, "idle": rss_idle, "ka": rss, "closed": closed,
                       "hwm_after": hwm_after}
        if bad:
            problems.append(f"{v.name}: {bad} of {KEEPALIVE_CONNECTIONS:,} keep-alive requests "
                            "were not answered 200")
        if closed:
            problems.append(f"{v.name}: {closed} of {KEEPALIVE_CONNECTIONS:,} keep-alive "
                            "connections were closed by the server within 1 s")
        log(f"  {v.name:34} peak {hwm / 1024:7.1f} MiB, {KEEPALIVE_CONNECTIONS} conns "
            + (f"{rss / 1024:7.1f} MiB" if rss is not None else "failed"))
    for g in gateways:
        os.kill(g.proc.pid, signal.SIGCONT)

    meta = collect_meta(cfg, elapsed, noisy)
    meta["waited"] = cfg["idle_budget"] - budget[0]
    meta["noisy_runs"] = noisy_runs
    if a.baseline:
        meta["baseline"] = {"dir": a.baseline, "version": version([base_bin, "--version"])}
    md = report(cfg, variants, wrk, fixed, mem, meta, problems)
    print(md)
    out = os.path.join(tmp, "result.md")
    with open(out, "w") as f:
        f.write(md)
    if a.write:
        write_doc(md)
        log(f"wrote {os.path.relpath(DOC, os.getcwd())}")
    else:
        log("docs/performance.md not written (--quick, --only or --no-write-docs)")
    if a.baseline:
        log("against the baseline: " + baseline_comparison(cfg["rounds"], wrk, fixed)["verdict"]
            + "".join(f"\n  {c}" for c in baseline_caveats(cfg["rounds"], meta)))
    if problems:
        log("\nPROBLEMS (also in the report):\n  " + "\n  ".join(problems))
        return 1
    return 0


def collect_meta(cfg, elapsed, noisy):
    cpu = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    git = subprocess.run(["git", "-C", ROOT, "describe", "--always", "--dirty", "--abbrev=12"],
                         capture_output=True, text=True).stdout.strip() or "?"
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": len(os.sched_getaffinity(0)),
        "cpu": cpu,
        "kernel": os.uname().release,
        "tollgate": f"{version([TOLLGATE, '--version'])}, commit {git}",
        "rustc": version(["rustc", "-V"]),
        "nginx": version(["nginx", "-v"]).replace("nginx version: ", ""),
        "haproxy": version(["haproxy", "-v"]).split(" - ")[0].replace(" version", ""),
        "wrk": version(["wrk", "-v"]).split(" Copyright")[0],
        "h2load": version(["h2load", "--version"]),
        "elapsed": elapsed,
        "noisy": noisy,
    }


def report(cfg, variants, wrk, fixed, mem, meta, problems):
    R = cfg["rounds"]
    names = [v.name for v in variants]
    rounds = range(R)

    def per_round(fn):
        out = []
        for r in rounds:
            try:
                out.append(fn(r))
            except (TypeError, KeyError, ZeroDivisionError):
                out.append(None)
        return out

    def w(n, r, key):
        return wrk[n][r][key]

    thr = {n: summary(per_round(lambda r: w(n, r, "rps"))) for n in names}
    thr_direct = {n: summary(per_round(lambda r: w(n, r, "rps") / w("direct", r, "rps")))
                  for n in names}
    thr_nginx = {n: summary(per_round(lambda r: w(n, r, "rps") / w("nginx", r, "rps")))
                 if "nginx" in names else None for n in names}

    def fx(rate, n, r):
        return fixed[rate][n][r]

    def sustained_rounds(rate, n):
        return sum(1 for r in rounds if fx(rate, n, r) and fx(rate, n, r)["sustained"])

    def sustains(rate, n):
        """Sustained in the majority of rounds."""
        return sustained_rounds(rate, n) * 2 > R

    def added(rate, n, key):
        return summary(per_round(lambda r: both(rate, n, "direct", r, key, "-")))

    def paced_cpu(rate, n, key="cpu_us"):
        return summary(per_round(lambda r: fx(rate, n, r)[key] if fx(rate, n, r)["sustained"]
                                 else None))

    def both(rate, a, b, r, key, op):
        """a's figure over (or minus) b's in round r, if both sustained it."""
        x, y = fx(rate, a, r), fx(rate, b, r)
        if not (x["sustained"] and y["sustained"]):
            return None
        return x[key] / y[key] if op == "/" else x[key] - y[key]

    def achieved(rate, n):
        return summary(per_round(lambda r: fx(rate, n, r)["achieved"]))

    lo_rate = RATES[0]
    L = []
    L.append(START)
    L.append("## Against nginx and haproxy (`tests/bench/run`)")
    L.append("")
    L.append("Written by the script; edit the script, not this section.")
    L.append("")
    L.append(f"- run: {meta['date']}, {R} round(s) in {meta['elapsed'] / 60:.1f} min; "
             f"`nproc` = {meta['nproc']} ({meta['cpu']}); Linux {meta['kernel']}")
    L.append("- reproduce (from the repository root, as root: it installs `nginx-light`, "
             "`haproxy`, `wrk`, `nghttp2-client` when missing): `tests/bench/run` "
             "(`ROUNDS=7 tests/bench/run` for more rounds; `tests/bench/run --quick` for a "
             "1-round trial that does not write this file; `tests/bench/run --baseline DIR` "
             "also runs the 0-step and 5-step gateways from a saved build, `DIR/tollgate` and "
             "`DIR/plugins/*.wasm`, and compares: `tests/bench/run --help`)")
    L.append(f"- versions: {meta['tollgate']}; {meta['rustc']}; {meta['nginx']}; "
             f"{meta['haproxy']}; {meta['wrk']}; {meta['h2load']}")
    L.append("- processes, all on 127.0.0.1 and started once for the whole run: the upstream "
             "`tollgate demo-upstream` (hyper, JSON); nginx (`worker_processes auto`, upstream "
             "keep-alive, no access log); haproxy (`nbthread` default = all CPUs, "
             "`http-reuse always`); one release `tollgate run` per Tollgate variant "
             "(`TOLLGATE_LOG=warn`, `[reload] watch = false`, `step-timeout = \"200ms\"`, "
             "plugins and configured snapshots precompiled by a first start; measuring starts "
             "once every step serves from its snapshot). Gateways not being measured are paused "
             "(SIGSTOP) so that their idle timer threads do not load the machine.")
    L.append(f"- request: `GET {PATH}` (a 36-byte JSON answer) with "
             + ", ".join(f"`{k}`" for k, _ in HEADERS)
             + " — the same for every variant; the key is valid for the Tollgate consumer.")
    L.append("- chains: " + "; ".join(
        f"{v.name.replace('tollgate, ', '')}: {v.chain_note}" for v in variants
        if v.kind == "tollgate" and not v.baseline and v.chain_note != "no steps")
        + ". rate-limit allows 10,000,000 calls per second per consumer (it counts, never "
        "refuses); cache is keyed by consumer (`cache-authorized = true`). Cache miss: the "
        "step keys and looks up every call and buffers and checks every response, but "
        "stores only status 203 and the upstream answers 200, so every lookup misses "
        "(the cost of storing an entry is not included). Cache hit: the entry is stored "
        "before the run and every call is answered from it (`X-Cache: HIT`, checked).")
    noisy = meta["noisy"]
    shown = "; ".join(f"{label} ({busy:.0%})" for label, busy in noisy[:8])
    if len(noisy) > 8:
        shown += f"; and {len(noisy) - 8} more"
    L.append(f"- noise control: before every measured run the machine must be at most "
             f"{BUSY_LIMIT:.0%} busy over {cfg['idle_seconds']:g} s (/proc/stat; up to "
             f"{cfg['idle_tries']} tries, 2 s apart, at most {cfg['idle_budget']} s of waiting "
             f"in all; waited {meta['waited']:.0f} s). {len(noisy)} of "
             f"{R * len(variants) * 3} runs started on a busier machine"
             + (f" ({shown})." if noisy else ".")
             + " Variants interleave, their order rotating from round to round; figures are "
               "medians over the rounds (min–max); ratios and differences are taken within "
               "each round, then summarised.")
    L.append("")

    # Targets
    L.append("### Targets")
    L.append("")
    L.append("| target | measured | result |")
    L.append("|---|---|---|")
    targets = []

    def target(text, measured, ok):
        res = "n/a" if ok is None else ("**PASS**" if ok else "**FAIL**")
        targets.append(res)
        L.append(f"| {text} | {measured} | {res} |")

    have = set(names)
    if {GW0, "nginx"} <= have:
        s = thr_nginx[GW0]
        target("tollgate 0 steps: throughput ≥ 1.1 × nginx's", f"{ratio(s)} nginx",
               None if s is None else s[0] >= 1.1)
        if sustains(lo_rate, GW0) and sustains(lo_rate, "nginx"):
            s = summary(per_round(lambda r: both(lo_rate, GW0, "nginx", r, "cpu_us", "/")))
            basis = f"at {lo_rate:,} req/s"
        else:
            s = summary(per_round(lambda r: w(GW0, r, "cpu_us") / w("nginx", r, "cpu_us")))
            basis = "saturated (wrk): a fixed rate was not sustained"
        target("tollgate 0 steps: CPU per request ≤ nginx's",
               f"{ratio(s)} nginx's, {basis}", None if s is None else s[0] <= 1.0)
    if {GW0, GW5} <= have:
        s = summary(per_round(lambda r: w(GW5, r, "rps") / w(GW0, r, "rps")))
        target("5-step chain: throughput ≥ 0.75 × 0 steps", f"{ratio(s)} 0 steps",
               None if s is None else s[0] >= 0.75)
        if sustains(lo_rate, GW5) and sustains(lo_rate, GW0):
            s = summary(per_round(lambda r: both(lo_rate, GW5, GW0, r, "cpu_us", "-")))
            basis = f"at {lo_rate:,} req/s"
        else:
            s = summary(per_round(lambda r: w(GW5, r, "cpu_us") - w(GW0, r, "cpu_us")))
            basis = (f"saturated (wrk): the 5-step chain does not sustain {lo_rate:,} req/s, "
                     "so at a lower rate than 0 steps")
        target("5-step chain: added CPU over 0 steps ≤ 40 µs per request",
               f"{fmt(s, 1, sign=True, suffix=' µs')}, {basis}",
               None if s is None else s[0] <= 40.0)
    if {GW0, GW5W} <= have:
        s = summary(per_round(lambda r: w(GW5W, r, "rps") / w(GW0, r, "rps")))
        target("5-step chain, worker isolation: throughput ≥ 0.75 × 0 steps",
               f"{ratio(s)} 0 steps", None if s is None else s[0] >= 0.75)
    if {GW5, GW5F} <= have:
        s = summary(per_round(lambda r: w(GW5, r, "cpu_us") - w(GW5F, r, "cpu_us")))
        t = summary(per_round(lambda r: w(GW5, r, "rps") / w(GW5F, r, "rps")))
        target("5-step chain, request isolation: the in-guest reset against a fresh instance "
               "per request (`[plugins] reset = false`); which is kept, not a target",
               f"CPU {fmt(s, 1, sign=True, suffix=' µs')} per request, throughput {ratio(t)}",
               None)
    if {GW0, GWT, GWT_SKIPPED} <= have:
        t0 = summary(per_round(lambda r: w(GWT_SKIPPED, r, "rps") / w(GW0, r, "rps")))
        t1 = summary(per_round(lambda r: w(GWT_SKIPPED, r, "rps") / w(GWT, r, "rps")))
        c0 = summary(per_round(lambda r: w(GWT_SKIPPED, r, "cpu_us") - w(GW0, r, "cpu_us")))
        c1 = summary(per_round(lambda r: w(GWT, r, "cpu_us") - w(GW0, r, "cpu_us")))
        target("a step whose condition (`when`) is false against no step and against the same "
               "step running (transform); what is measured, not a target",
               f"throughput {ratio(t0)} 0 steps, {ratio(t1)} the step running; CPU over 0 steps "
               f"{fmt(c0, 1, sign=True, suffix=' µs')} per request skipped, "
               f"{fmt(c1, 1, sign=True, suffix=' µs')} running", None)
    for chain, gw in (("0 steps", GW0), ("5-step chain", GW5)):
        off = gw + UNOBSERVED
        for on, what in ((gw, "metrics on"), (gw + ANALYTICS, "metrics and analytics on")):
            if {on, off} <= have:
                t = summary(per_round(lambda r, on=on: w(on, r, "rps") / w(off, r, "rps")))
                c = summary(per_round(lambda r, on=on: w(on, r, "cpu_us") - w(off, r, "cpu_us")))
                target(f"{chain}, {what}: throughput ≥ {OBSERVE_FLOOR} × the same chain "
                       "unobserved (`[metrics] enabled = false`, no `[analytics]`)",
                       f"{ratio(t)}, CPU {fmt(c, 1, sign=True, suffix=' µs')} per request",
                       None if t is None else t[0] >= OBSERVE_FLOOR)
    hi_rate = RATES[-1]
    dead = GW5 + DEAD_OTEL
    if {GW5, dead} <= have:
        t = summary(per_round(lambda r: w(dead, r, "rps") / w(GW5, r, "rps")))
        late = []
        for rate in RATES:
            if sustains(rate, dead) and sustains(rate, GW5):
                d = summary(per_round(lambda r, rate=rate: both(rate, dead, GW5, r, "p99", "-")))
                late.append(f"{rate // 1000}k req/s {fmt(d, sign=True, suffix=' µs')}")
            else:
                late.append(f"{rate // 1000}k req/s not sustained")
        target("5-step chain, every call traced (`sample-ratio = 1.0`: a span per call, step "
               "phase and upstream call) to a dead collector, against untraced: what tracing "
               "every call costs, not a target (that a dead collector fails or delays no "
               "request is tests/tests/e2e/traces.rs)",
               f"throughput {ratio(t)}; p99: {', '.join(late)}", None)
    if {GW5, "nginx"} <= have:
        if not sustains(hi_rate, "direct"):
            target(f"5-step chain: added p99 at {hi_rate:,} req/s ≤ nginx's",
                   f"the direct upstream did not sustain {hi_rate:,} req/s", None)
        elif not sustains(hi_rate, GW5):
            s = achieved(hi_rate, GW5)
            target(f"5-step chain: added p99 at {hi_rate:,} req/s ≤ nginx's",
                   f"saturated: achieved {fmt(s)} req/s", False)
        elif not sustains(hi_rate, "nginx"):
            target(f"5-step chain: added p99 at {hi_rate:,} req/s ≤ nginx's",
                   f"nginx saturated (achieved {fmt(achieved(hi_rate, 'nginx'))} req/s)", None)
        else:
            a5, an = added(hi_rate, GW5, "p99"), added(hi_rate, "nginx", "p99")
            target(f"5-step chain: added p99 at {hi_rate:,} req/s ≤ nginx's",
                   f"{fmt(a5, sign=True, suffix=' µs')} vs nginx "
                   f"{fmt(an, sign=True, suffix=' µs')}",
                   None if a5 is None or an is None else a5[0] <= an[0])
    if GW5 in have:
        ka = mem[GW5]["ka"]
        mb = None if ka is None else ka * 1024 / 1e6
        target(f"5-step chain: RSS ≤ {RSS_TARGET_MB:g} MB with {KEEPALIVE_CONNECTIONS:,} "
               "keep-alive connections", "test failed" if mb is None else f"{mb:.1f} MB",
               None if mb is None else mb <= RSS_TARGET_MB)
    if not targets:
        L.append("| (none: the variants they compare were not measured, see `--only`) | — | n/a |")
    L.append("")
    if "baseline" in meta:
        L += baseline_section(R, wrk, fixed, meta)
    if problems:
        L.append("**Problems in this run** (the figures they touch are not to be trusted):")
        L.append("")
        for p in problems:
            L.append(f"- {p}")
        L.append("")

    # Throughput and CPU
    L.append(f"### Saturation (wrk: 1 thread, {WRK_CONNECTIONS} connections, "
             f"{cfg['duration']:g} s per run) and CPU per request")
    L.append("")
    L.append("All processes share the machine's CPUs, load generator included. CPU: the proxy "
             "process's utime + stime (all nginx processes together) over the run ÷ requests "
             f"served; the direct row shows the upstream's. CPU per request falls as load rises "
             f"(more requests per wake-up), so compare it at the same fixed rate "
             f"({lo_rate:,} req/s column).")
    L.append("")
    L.append(f"| variant | requests/s | ÷ direct | ÷ nginx | proxy CPU µs/req, saturated | "
             f"proxy CPU µs/req at {lo_rate:,} req/s | upstream CPU µs/req at {lo_rate:,} req/s "
             f"| non-2xx, socket errors |")
    L.append("|---|---|---|---|---|---|---|---|")
    for n in names:
        d = n == "direct"
        sat_cpu = summary(per_round(lambda r: w(n, r, "up_cpu_us" if d else "cpu_us")))
        if sustains(lo_rate, n):
            pc = fmt(paced_cpu(lo_rate, n, "up_cpu_us" if d else "cpu_us"), 1)
            uc = fmt(paced_cpu(lo_rate, n, "up_cpu_us"), 1)
        else:
            pc = f"saturated (achieved {fmt(achieved(lo_rate, n))} req/s)"
            uc = "—"
        bad = sum(w(n, r, "non2xx") for r in rounds if wrk[n][r])
        errs = sum(w(n, r, "socket_errors") for r in rounds if wrk[n][r])
        total = sum(w(n, r, "requests") for r in rounds if wrk[n][r])
        L.append(f"| {n} | {fmt(thr[n])} | {ratio(thr_direct[n])} | "
                 f"{ratio(thr_nginx[n]) if thr_nginx[n] else '—'} | "
                 f"{fmt(sat_cpu, 1)}{' (upstream)' if d else ''} | "
                 f"{pc}{' (upstream)' if d else ''} | {uc} | {bad}, {errs} of {total:,} |")
    L.append("")

    # Latency
    L.append(f"### Latency added over direct at fixed rates (h2load `--h1 --rps`, "
             f"{cfg['duration']:g} s after {cfg['warmup']:g} s of warm-up)")
    L.append("")
    L.append("Per-request durations from h2load's `--log-file`; each percentile minus the "
             "direct upstream's in the same round (the direct row: its own, absolute). "
             "h2load's rate timer fires every 10 ms per connection and one h2load process "
             "connects all its clients at once, so its requests come in bursts; the load "
             f"therefore comes from {H2LOAD_PROCESSES} h2load processes started "
             f"{10 / H2LOAD_PROCESSES:g} ms apart, "
             "with one keep-alive connection per 100 req/s ("
             + ", ".join(f"{r // 100} at {r:,} req/s" for r in RATES) + ")"
             + f": every {10 / H2LOAD_PROCESSES:g} ms a burst of about "
             f"{RATES[0] // 100 // H2LOAD_PROCESSES} (at {RATES[0]:,}) or "
             f"{RATES[-1] // 100 // H2LOAD_PROCESSES} (at {RATES[-1]:,}) requests. "
             "h2load times a request from when it sends it; a connection sends its next "
             "request only after the previous response, so a proxy that falls behind "
             "shows up in the achieved rate rather than in the percentiles. A rate counts as "
             f"sustained when at least "
             f"{SUSTAINED:.0%} of it was answered with 2xx within the run; a variant that "
             "falls short in most rounds is reported as **saturated** with the rate it "
             "achieved, and rounds that fell short are left out of the percentiles.")
    L.append("")
    head = "| variant |"
    sep = "|---|"
    for rate in RATES:
        head += (f" {rate // 1000}k: achieved req/s | {rate // 1000}k: p50 µs | "
                 f"{rate // 1000}k: p99 µs | {rate // 1000}k: p99.9 µs |")
        sep += "---|---|---|---|"
    L.append(head)
    L.append(sep)
    for n in names:
        row = f"| {n} |"
        for rate in RATES:
            ach = fmt(achieved(rate, n))
            k = sustained_rounds(rate, n)
            if not sustains(rate, n):
                row += f" **saturated**: {ach} | — | — | — |"
                continue
            note = "" if k == R else f" ({R - k} of {R} rounds below {SUSTAINED:.0%})"
            if n == "direct":
                cells = [fmt(summary(per_round(lambda r: fx(rate, n, r)[key]
                                               if fx(rate, n, r)["sustained"] else None)))
                         for key in ("p50", "p99", "p999")]
            elif not sustains(rate, "direct"):
                cells = ["direct saturated"] * 3
            else:
                cells = [fmt(added(rate, n, key), sign=True) for key in ("p50", "p99", "p999")]
            row += f" {ach}{note} | " + " | ".join(cells) + " |"
        L.append(row)
    L.append("")

    # Memory
    L.append(f"### Memory")
    L.append("")
    L.append(f"Peak RSS: VmHWM of the proxy process after the rounds (since it started, "
             f"warm-up and all load included). With {KEEPALIVE_CONNECTIONS:,} connections: "
             f"VmRSS with {KEEPALIVE_CONNECTIONS:,} connections open, opened one after "
             "the other with one keep-alive GET each whose response was read before the next, "
             "1 s after the last. "
             "nginx: its master and workers summed (shared pages counted in each). "
             "MB = 10^6 bytes.")
    L.append("")
    L.append(f"| variant | peak RSS MB (rounds) | RSS MB idle after the rounds | RSS MB with "
             f"{KEEPALIVE_CONNECTIONS:,} keep-alive connections | peak RSS MB after them |")
    L.append("|---|---|---|---|---|")
    for n in names:
        m = mem[n]
        ka = "failed" if m["ka"] is None else f"{m['ka'] * 1024 / 1e6:.1f}"
        L.append(f"| {n} | {m['hwm'] * 1024 / 1e6:.1f} | {m['idle'] * 1024 / 1e6:.1f} | "
                 f"{ka} | {m['hwm_after'] * 1024 / 1e6:.1f} |")
    L.append("")
    L.append(END)
    return "\n".join(L) + "\n"


def write_doc(md):
    with open(DOC) as f:
        text = f.read()
    if START in text and END in text:
        before = text[:text.index(START)]
        after = text[text.index(END) + len(END):]
        text = before + md.rstrip("\n") + after
    else:
        text = text.rstrip("\n") + "\n\n" + md
    with open(DOC, "w") as f:
        f.write(text)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as e:
        log(f"error: {e}")
        sys.exit(2)
    except KeyboardInterrupt:
        log("interrupted")
        sys.exit(130)

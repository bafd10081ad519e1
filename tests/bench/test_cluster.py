#!/usr/bin/env python3
"""Unit tests of tests/bench/cluster.py's pure parts: reading wrk's output,
the report's ratios and the docs section it rewrites. No processes are
started.

    python3 -m unittest discover -s tests/bench -p 'test_*.py'
"""

import os
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cluster  # noqa: E402
from bench import BenchError  # noqa: E402

WRK_LATENCY = """Running 2s test @ http://127.0.0.1:40000/pets/7
  1 threads and 1 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   210.51us   80.12us   3.10ms   95.00%
    Req/Sec     4.70k   200.00     5.00k    70.00%
  Latency Distribution
     50%  195.00us
     75%  220.00us
     90%  260.00us
     99%    1.20ms
  9400 requests in 2.00s, 1.50MB read
Requests/sec:   4700.00
Transfer/sec:    768.00KB
"""


def rnd(one, three, p50_one, p50_three, calls=2.0):
    return {
        "one": {"rps": one, "per_node": one, "cpu_us": 100.0, "requests": one * 2},
        "three": {"rps": three, "per_node": three / 3, "cpu_us": 150.0, "requests": three * 2},
        "lat_one": {"requests": 1, "p50": p50_one, "p99": p50_one * 3},
        "lat_three": {"requests": 1, "p50": p50_three, "p99": p50_three * 3},
        "lat_one_rl": {"requests": 1, "p50": p50_one - 50, "p99": p50_one * 2},
        "lat_three_rl": {"requests": 1, "p50": p50_three - 20, "p99": p50_three * 2},
        "redis_per_request": calls,
    }


META = {"duration": 2, "cpus": 2, "date": "2026-12-05"}


class ParseWrk(unittest.TestCase):
    def test_latency_percentiles_in_microseconds(self):
        got = cluster.parse_wrk(WRK_LATENCY, latency=True)
        self.assertEqual(got, {"requests": 9400, "p50": 195.0, "p99": 1200.0})

    def test_failed_requests_fail_the_run(self):
        for extra in ("  Non-2xx or 3xx responses: 3\n",
                      "  Socket errors: connect 0, read 1, write 0, timeout 0\n"):
            with self.assertRaises(BenchError):
                cluster.parse_wrk(WRK_LATENCY + extra, latency=True)

    def test_no_count_is_an_error(self):
        with self.assertRaises(BenchError):
            cluster.parse_wrk("unable to connect to 127.0.0.1:1", latency=False)


class Calls(unittest.TestCase):
    def test_only_the_scripts_are_round_trips(self):
        stats = ("# Commandstats\r\ncmdstat_evalsha:calls=200,usec=1\r\n"
                 "cmdstat_eval:calls=2,usec=1\r\ncmdstat_incrby:calls=200,usec=1\r\n"
                 "cmdstat_info:calls=4,usec=1\r\n")
        self.assertEqual(cluster.parse_calls(stats), 202)


class Report(unittest.TestCase):
    def test_ratios_and_added_latency_are_per_round_medians(self):
        md = cluster.report([rnd(10000, 6000, 200, 300), rnd(8000, 6000, 220, 280),
                             rnd(9000, 4500, 210, 330)], META)
        # Total ratios 0.60, 0.75, 0.50: median 0.60; per node a third.
        self.assertIn("| 0.60× (0.50–0.75) |", md)
        self.assertIn("| 0.20× (0.17–0.25) |", md)
        # Added p50: 100, 60, 120 µs; the rate limit alone 30 more each.
        self.assertIn("adds **+130 µs** per request at the median (+90 to +150)", md)
        self.assertIn("the difference is +100 µs (+60 to +120)", md)
        self.assertIn("2.00 Redis round trips per request", md)
        self.assertTrue(md.startswith(cluster.START) and md.endswith(cluster.END + "\n"))

    def test_the_docs_section_is_replaced_in_place(self):
        with tempfile.TemporaryDirectory() as d:
            doc = os.path.join(d, "performance.md")
            with open(doc, "w") as f:
                f.write(f"# Perf\n\n{cluster.START}\nold\n{cluster.END}\n\n## After\n")
            cluster.write_doc(f"{cluster.START}\nnew\n{cluster.END}\n", doc)
            with open(doc) as f:
                text = f.read()
            self.assertEqual(text, f"# Perf\n\n{cluster.START}\nnew\n{cluster.END}\n\n## After\n")
            # Without the markers: appended under a heading of its own.
            with open(doc, "w") as f:
                f.write("# Perf\n")
            cluster.write_doc(f"{cluster.START}\nnew\n{cluster.END}\n", doc)
            with open(doc) as f:
                self.assertIn("## Cluster mode", f.read())


if __name__ == "__main__":
    unittest.main()

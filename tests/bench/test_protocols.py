#!/usr/bin/env python3
"""Unit tests of tests/bench/protocols.py's pure parts: h2load's and
ws-load's output, the gRPC frame, the report's ratios and the docs section
it rewrites. No processes are started.

    python3 -m unittest discover -s tests/bench -p 'test_*.py'
"""

import os
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import protocols  # noqa: E402
from bench import BenchError  # noqa: E402

H2LOAD = """starting benchmark...
spawning thread #0: 16 total client(s). Timing-based test with 0s of warm-up time and 2s of main duration for measurements.
Warm-up started for thread #0.
Warm-up phase is over for thread #0.
Main benchmark duration is started for thread #0.
Main benchmark duration is over for thread #0. Stopping all clients.
Stopped all clients for thread #0

finished in 2.00s, 21034.50 req/s, 1.12MB/s
requests: 42069 total, 42197 started, 42069 done, 42069 succeeded, 0 failed, 0 errored, 0 timeout
status codes: 42069 2xx, 0 3xx, 0 4xx, 0 5xx
traffic: 2.24MB (2352880) total, 1.27MB (1335000) headers (space savings 92.80%), 466.24KB (477429) data
"""


def rounds(nginx_grpc, gw_grpc, nginx_ws, gw_ws):
    def t(g, w):
        return {"grpc": {"rps": g, "cpu_us": 30.0, "done": 1},
                "ws": {"rate": w, "p50": 400, "p99": 900, "cpu_us": 20.0, "messages": 1}}
    return [{"direct": t(a * 2, c * 2), "nginx": t(a, c), "tollgate": t(b, d),
             "tollgate-0": {"grpc": t(b * 2, 0)["grpc"]}}
            for a, b, c, d in zip(nginx_grpc, gw_grpc, nginx_ws, gw_ws)]


class ProtocolsTest(unittest.TestCase):
    def test_h2load_summary(self):
        r = protocols.parse_h2load(H2LOAD)
        self.assertEqual(r, {"rps": 21034.5, "done": 42069, "ok": 42069})
        with self.assertRaises(BenchError):
            protocols.parse_h2load("no such thing")

    def test_ws_load_line(self):
        r = protocols.parse_ws_load(
            'noise\n{"messages": 5000, "rate": 2500.0, "p50_us": 380, "p99_us": 1200}\n')
        self.assertEqual(r, {"rate": 2500.0, "messages": 5000, "p50": 380, "p99": 1200})
        with self.assertRaises(BenchError):
            protocols.parse_ws_load("connection 3: refused\n")

    def test_grpc_frame(self):
        self.assertEqual(protocols.grpc_frame(b"abc"), b"\x00\x00\x00\x00\x03abc")

    def test_report_ratios_against_nginx_per_round(self):
        md = protocols.report(rounds([100, 200, 300], [50, 150, 150], [10, 20, 40], [5, 20, 10]),
                              {"duration": 4, "cpus": 2, "date": "2026-12-05"})
        self.assertTrue(md.startswith(protocols.START) and md.rstrip().endswith(protocols.END))
        row = next(line for line in md.splitlines() if line.startswith("| tollgate ("))
        # gRPC ratios 0.50, 0.75, 0.50: median 0.50; WebSocket 0.50, 1.00, 0.25: 0.50.
        self.assertIn("| 0.50× (0.50–0.75) |", row)
        self.assertIn("| 0.50× (0.25–1.00) |", row)
        nginx = next(line for line in md.splitlines() if line.startswith("| nginx"))
        self.assertIn("| 1.00× (1.00–1.00) |", nginx)
        direct = next(line for line in md.splitlines() if line.startswith("| upstream"))
        self.assertIn("| — |", direct)
        # Without steps: gRPC only (1.00, 1.50, 1.00: median 1.00).
        bare = next(line for line in md.splitlines() if line.startswith("| tollgate, 0 steps"))
        self.assertIn("| 1.00× (1.00–1.50) |", bare)
        self.assertTrue(bare.endswith("| — | — | — | — | — |"), bare)

    def test_the_docs_section_is_replaced_or_added(self):
        with tempfile.TemporaryDirectory() as d:
            doc = os.path.join(d, "performance.md")
            with open(doc, "w") as f:
                f.write("# Performance\n")
            protocols.write_doc(f"{protocols.START}\none\n{protocols.END}\n", doc)
            protocols.write_doc(f"{protocols.START}\ntwo\n{protocols.END}\n", doc)
            with open(doc) as f:
                text = f.read()
            self.assertIn("## gRPC and WebSocket: the gateway against nginx", text)
            self.assertIn("two", text)
            self.assertNotIn("one", text)
            self.assertEqual(text.count(protocols.START), 1)


if __name__ == "__main__":
    unittest.main()

#!/usr/bin/env python3
"""Unit tests of tests/bench/bench.py's pure parts: which variants `--only`
picks, the `--baseline` variants and their comparison, and that the report
carries the comparison only with a baseline. No processes are started.

    python3 -m unittest discover -s tests/bench -p 'test_*.py'
"""

import os
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402

GW0, GW5 = bench.GW0, bench.GW5
B0, B5 = bench.BASELINE_OF[GW0], bench.BASELINE_OF[GW5]
NOSNAP = "tollgate, 5 steps (cache miss), no snapshots"
HIT = "tollgate, 5 steps (cache hit)"
WORKER = bench.GW5W
FRESH = bench.GW5F


def read(path):
    with open(path) as f:
        return f.read()


def names(baseline):
    return ["nginx", "haproxy"] + [n for n, *_ in bench.gateway_variants(baseline)]


class SelectVariants(unittest.TestCase):
    def test_no_only_picks_everything(self):
        self.assertEqual(bench.select_variants(None, names(True)), names(True))

    def test_issue_14_check_picks_the_two_pairs_only(self):
        got = bench.select_variants("0 steps,5 steps (cache miss)", names(True))
        self.assertEqual(got, [GW0, B0, GW5, B5])
        self.assertNotIn(NOSNAP, got)

    def test_without_baseline_short_names_pick_the_current_variants(self):
        got = bench.select_variants("0 steps,5 steps (cache miss)", names(None))
        self.assertEqual(got, [GW0, GW5])

    def test_exact_name_wins_over_substring(self):
        self.assertEqual(bench.select_variants("key-auth", names(None)), ["tollgate, key-auth"])
        self.assertEqual(bench.select_variants(NOSNAP, names(True)), [NOSNAP])

    def test_commas_in_names_and_spaced_lists(self):
        self.assertEqual(bench.select_variants("tollgate, key-auth", names(None)),
                         ["tollgate, key-auth"])
        self.assertEqual(bench.select_variants("nginx, haproxy", names(None)),
                         ["nginx", "haproxy"])
        self.assertEqual(bench.select_variants(f"nginx,{NOSNAP}", names(True)),
                         ["nginx", NOSNAP])

    def test_other_entries_are_substrings(self):
        got = bench.select_variants("5 steps", names(True))
        self.assertEqual(got, [GW5, B5, HIT, NOSNAP, WORKER, FRESH,
                               GW5 + bench.UNOBSERVED, GW5 + bench.ANALYTICS,
                               GW5 + bench.DEAD_OTEL])
        got = bench.select_variants("key", names(None))
        self.assertEqual(got, ["tollgate, key-auth", "tollgate, key-auth + rate-limit"])

    def test_a_baseline_variant_comes_with_its_twin(self):
        self.assertEqual(bench.select_variants("baseline", names(True)), [GW0, B0, GW5, B5])
        self.assertEqual(bench.select_variants(GW5, names(True)), [GW5, B5])
        self.assertEqual(bench.select_variants(B0, names(True)), [GW0, B0])

    def test_an_entry_that_picks_nothing_stops_the_run(self):
        with self.assertRaises(bench.BenchError):
            bench.select_variants("nginx,ngnix", names(True))
        with self.assertRaises(bench.BenchError):
            bench.select_variants("baseline", names(None))


class BaselineVariants(unittest.TestCase):
    def test_each_baseline_variant_follows_its_twin_with_the_same_chain(self):
        specs = bench.gateway_variants("/some/dir")
        by_name = {n: (steps, xcache, base) for n, steps, xcache, base in specs}
        order = [n for n, *_ in specs]
        for cur, base in bench.BASELINE_OF.items():
            self.assertEqual(order.index(base), order.index(cur) + 1)
            self.assertEqual(by_name[base][:2], by_name[cur][:2])
            self.assertTrue(by_name[base][2])
            self.assertFalse(by_name[cur][2])
        self.assertEqual(len(specs), len(bench.TOLLGATE_VARIANTS) + 2)
        self.assertEqual(len(bench.gateway_variants(None)), len(bench.TOLLGATE_VARIANTS))

    def test_plugin_files_of_the_five_step_chain(self):
        steps = ["access-log", "key-auth", "rate-limit", "cache-miss", "transform"]
        self.assertEqual(bench.plugin_files(steps),
                         ["access_log.wasm", "cache.wasm", "key_auth.wasm",
                          "rate_limit.wasm", "transform.wasm"])

    def test_worker_variant_runs_the_five_step_chain_with_worker_isolation(self):
        specs = {n: steps for n, steps, *_ in bench.gateway_variants(None)}
        self.assertEqual(specs[WORKER], specs[GW5])
        self.assertEqual(bench.select_variants("worker", names(True)), [WORKER])
        with tempfile.TemporaryDirectory() as d:
            path = bench.write_tollgate(d, 1, 2, specs[GW5], "0" * 64, isolation="worker")
            self.assertIn('[limits]\nstep-timeout = "200ms"\nstep-isolation = "worker"\n',
                          read(path))
            # The default is not written: a baseline build may not know the key.
            path = bench.write_tollgate(d, 1, 2, specs[GW5], "0" * 64)
            self.assertNotIn("step-isolation", read(path))

    def test_fresh_variant_turns_the_reset_off(self):
        specs = {n: steps for n, steps, *_ in bench.gateway_variants(None)}
        self.assertEqual(specs[FRESH], specs[GW5])
        self.assertEqual(bench.select_variants("fresh", names(True)), [FRESH])
        with tempfile.TemporaryDirectory() as d:
            path = bench.write_tollgate(d, 1, 2, specs[GW5], "0" * 64, isolation="fresh")
            self.assertIn("snapshots = true\nreset = false\n", read(path))
            self.assertNotIn("step-isolation", read(path))
            # The default is not written: a baseline build may not know the key.
            path = bench.write_tollgate(d, 1, 2, specs[GW5], "0" * 64)
            self.assertNotIn("reset", read(path))

    def test_observed_variants_switch_metrics_and_analytics(self):
        specs = {n: steps for n, steps, *_ in bench.gateway_variants(None)}
        for gw in (bench.GW0, GW5):
            self.assertEqual(specs[gw + bench.UNOBSERVED], specs[gw])
            self.assertEqual(specs[gw + bench.ANALYTICS], specs[gw])
        with tempfile.TemporaryDirectory() as d:
            path = bench.write_tollgate(d, 1, 2, [], "0" * 64, observe="off")
            self.assertIn("\n[metrics]\nenabled = false\n", read(path))
            path = bench.write_tollgate(d, 1, 2, [], "0" * 64, observe="analytics")
            self.assertIn("\n[analytics]\n", read(path))
            # The default writes neither: a baseline build may not know them.
            path = bench.write_tollgate(d, 1, 2, [], "0" * 64)
            self.assertNotIn("[metrics]", read(path))
            self.assertNotIn("[analytics]", read(path))
            self.assertNotIn("[otel]", read(path))
            self.assertEqual(specs[GW5 + bench.DEAD_OTEL], specs[GW5])
            path = bench.write_tollgate(d, 1, 2, [], "0" * 64, observe="dead-otel")
            self.assertRegex(read(path), r'\n\[otel\]\nendpoint = "http://127\.0\.0\.1:[0-9]+/v1/traces"\n'
                             r'sample-ratio = 1\.0\n')

    def test_gateway_file_loads_the_given_plugin_folder(self):
        with tempfile.TemporaryDirectory() as d:
            path = bench.write_tollgate(d, 1, 2, ["noop"], "0" * 64, plugins="/base/plugins")
            self.assertIn('dirs = ["/base/plugins"]', read(path))
            path = bench.write_tollgate(d, 1, 2, ["noop"], "0" * 64)
            self.assertIn(f'dirs = ["{bench.PLUGINS}"]', read(path))

    def test_check_baseline_wants_binary_and_plugins(self):
        with tempfile.TemporaryDirectory() as d:
            with self.assertRaises(bench.BenchError):
                bench.check_baseline(d)
            binary = os.path.join(d, "tollgate")
            with open(binary, "w") as f:
                f.write("#!/bin/sh\n")
            os.chmod(binary, 0o755)
            os.makedirs(os.path.join(d, "plugins"))
            with self.assertRaises(bench.BenchError):
                bench.check_baseline(d)
            for f in bench.plugin_files(bench.STEP):
                open(os.path.join(d, "plugins", f), "w").close()
            bench.check_baseline(d)


def results(rounds, figures, rate_sustained=True):
    """wrk and fixed-rate results: figures = {name: [(rps, cpu_us, paced_cpu_us)] per round}."""
    wrk = {n: [{"rps": rps, "cpu_us": cpu, "up_cpu_us": 10.0, "requests": 1000,
                "non2xx": 0, "socket_errors": 0} for rps, cpu, _ in rs]
           for n, rs in figures.items()}
    fixed = {rate: {n: [{"sustained": rate_sustained, "achieved": rate, "cpu_us": paced,
                         "up_cpu_us": 10.0, "p50": 100, "p99": 200, "p999": 300}
                        for _, _, paced in rs] for n, rs in figures.items()}
             for rate in bench.RATES}
    return wrk, fixed


class BaselineComparison(unittest.TestCase):
    def test_same_figures_are_no_regression(self):
        figs = {n: [(20000, 40.0, 50.0), (21000, 41.0, 52.0), (19000, 39.0, 48.0)]
                for n in (GW0, B0, GW5, B5)}
        cmp = bench.baseline_comparison(3, *results(3, figs))
        self.assertEqual(cmp["verdict"], "no regression")
        for row in cmp["rows"]:
            self.assertTrue(row["ok"])
            self.assertEqual(row["thr"], (1.0, 1.0, 1.0))
            self.assertEqual(row["cpu"], (1.0, 1.0, 1.0))
            self.assertEqual(row["basis"], f"at {bench.RATES[0]:,} req/s")

    def test_ratios_are_taken_within_each_round_and_judged_on_the_median(self):
        figs = {GW0: [(19000, 40, 50), (19600, 40, 50), (30000, 40, 50)],
                B0: [(20000, 40, 50), (20000, 40, 50), (20000, 40, 50)],
                GW5: [(4000, 400, 400)] * 3, B5: [(4000, 400, 400)] * 3}
        cmp = bench.baseline_comparison(3, *results(3, figs))
        row = cmp["rows"][0]
        self.assertAlmostEqual(row["thr"][0], 0.98)
        self.assertAlmostEqual(row["thr"][1], 0.95)
        self.assertAlmostEqual(row["thr"][2], 1.5)
        self.assertEqual(cmp["verdict"], "no regression")

    def test_slower_throughput_is_a_regression_naming_the_variant(self):
        figs = {GW0: [(20000, 40, 50)], B0: [(20000, 40, 50)],
                GW5: [(3700, 400, 400)], B5: [(4000, 400, 400)]}
        cmp = bench.baseline_comparison(1, *results(1, figs))
        self.assertTrue(cmp["verdict"].startswith("regression: "), cmp["verdict"])
        self.assertIn(GW5, cmp["verdict"])
        self.assertIn("throughput 0.93× < 0.95×", cmp["verdict"])
        self.assertNotIn(GW0, cmp["verdict"])

    def test_more_cpu_at_the_fixed_rate_is_a_regression(self):
        figs = {GW0: [(20000, 40, 53)], B0: [(20000, 40, 50)],
                GW5: [(4000, 400, 400)], B5: [(4000, 400, 400)]}
        cmp = bench.baseline_comparison(1, *results(1, figs))
        self.assertIn(GW0, cmp["verdict"])
        self.assertIn("CPU per request 1.06× > 1.05×", cmp["verdict"])

    def test_cpu_falls_back_to_saturation_when_the_rate_is_not_sustained(self):
        figs = {GW0: [(20000, 44, 50)], B0: [(20000, 40, 50)],
                GW5: [(4000, 400, 400)], B5: [(4000, 400, 400)]}
        cmp = bench.baseline_comparison(1, *results(1, figs, rate_sustained=False))
        row = cmp["rows"][0]
        self.assertTrue(row["basis"].startswith("saturated (wrk)"))
        self.assertAlmostEqual(row["cpu"][0], 1.1)
        self.assertIn("regression", cmp["verdict"])

    def test_an_unmeasured_pair_leaves_the_verdict_open(self):
        figs = {GW0: [(20000, 40, 50)], B0: [(20000, 40, 50)]}
        cmp = bench.baseline_comparison(1, *results(1, figs))
        self.assertTrue(cmp["verdict"].startswith("not decided: "), cmp["verdict"])
        self.assertIn(GW5, cmp["verdict"])


class Report(unittest.TestCase):
    def report(self, with_baseline):
        gws = [GW0, GW5] + ([B0, B5] if with_baseline else [])
        figs = {n: [(20000, 40.0, 50.0)] for n in ["direct", "nginx"] + gws}
        wrk, fixed = results(1, figs)
        variants = [bench.Variant("direct", "direct", 1), bench.Variant("nginx", "nginx", 2)]
        for n in gws:
            v = bench.Variant(n, "tollgate", 3, chain_note="a → b")
            v.baseline = n.startswith("baseline")
            variants.append(v)
        mem = {n: {"hwm": 1000, "idle": 1000, "ka": 1000, "closed": 0, "hwm_after": 1000}
               for n in figs}
        meta = {"date": "now", "elapsed": 60, "nproc": 2, "cpu": "cpu", "kernel": "k",
                "tollgate": "t", "rustc": "r", "nginx": "n", "haproxy": "h", "wrk": "w",
                "h2load": "h2", "noisy": [], "waited": 0}
        if with_baseline:
            baseline_dir = tempfile.mkdtemp(prefix="tollgate-baseline-")
            self.addCleanup(os.rmdir, baseline_dir)
            meta["baseline"] = {"dir": baseline_dir, "version": "tollgate 0.1.0"}
        cfg = {"rounds": 1, "duration": 2, "warmup": 0.5, "idle_seconds": 0.5,
               "idle_tries": 2, "idle_budget": 10}
        return bench.report(cfg, variants, wrk, fixed, mem, meta, [])

    def test_comparison_only_with_a_baseline(self):
        plain = self.report(False)
        self.assertNotIn("Against the baseline", plain)
        self.assertNotIn("Verdict", plain)
        self.assertNotIn("| baseline,", plain)
        md = self.report(True)
        self.assertIn("### Against the baseline build (`--baseline`)", md)
        self.assertIn("**Verdict: no regression**", md)
        self.assertIn("| 0 steps | 20,000 / 20,000 | 1.00× | 50.0 / 50.0 | 1.00× |", md)

    def test_few_rounds_and_busy_runs_are_flagged(self):
        md = self.report(True)
        self.assertIn("Not conclusive: 1 round(s): too few", md)
        caveats = bench.baseline_caveats(5, {"noisy_runs": {GW0: 2, B5: 1, "nginx": 4}})
        self.assertEqual(caveats, ["3 of 30 runs of these variants started on a machine "
                                   "more than 20% busy."])
        self.assertEqual(bench.baseline_caveats(5, {"noisy_runs": {GW0: 0, B0: 0}}), [])

    def test_baseline_variants_leave_the_targets_and_chains_alone(self):
        def targets(md):
            return md[md.index("### Targets"):md.index("###", md.index("### Targets") + 3)]
        plain, with_base = self.report(False), self.report(True)
        self.assertEqual(targets(plain), targets(with_base))
        chains = [line for line in with_base.splitlines() if line.startswith("- chains:")][0]
        self.assertNotIn("baseline", chains)


if __name__ == "__main__":
    unittest.main()

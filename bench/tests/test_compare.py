"""Unit tests of the comparison suite's pure parts: percentiles, the generated function code and
Dockerfiles, the metrics parsing that tells pool hits from misses, and the report's rendering."""

import importlib.util
import json
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BENCH))

import compare  # noqa: E402


class Percentiles(unittest.TestCase):
    def test_nearest_rank(self):
        xs = list(range(1, 101))
        self.assertEqual(compare.pct(xs, 50), 50)
        self.assertEqual(compare.pct(xs, 99), 99)
        self.assertEqual(compare.pct([7], 99), 7)
        self.assertIsNone(compare.pct([], 50))

    def test_summary_of_unsorted_samples(self):
        s = compare.summary([3.0, 1.0, 2.0])
        self.assertEqual((s["n"], s["p50"], s["min"], s["max"]), (3, 2.0, 1.0, 3.0))


class Code(unittest.TestCase):
    def test_python_workloads_compile_and_carry_their_name(self):
        for w in compare.WORKLOADS:
            fname, text = compare.source(w, f"f-{w}")
            self.assertTrue(text.splitlines()[0].endswith(f"bench function f-{w}"))
            if fname.endswith(".py"):
                compile(text, fname, "exec")

    def test_hello_answers_with_its_name(self):
        _, text = compare.source("py-hello", "x1")
        ns = {}
        exec(compile(text, "app.py", "exec"), ns)
        out = ns["handler"]({"name": "n", "check": "json"}, None)
        self.assertEqual(out, {"fn": "x1", "hello": "n", "has": True})
        self.assertEqual(compare.check_answer("x1", 200, json.dumps(out).encode())["fn"], "x1")
        with self.assertRaises(RuntimeError):
            compare.check_answer("other", 200, json.dumps(out).encode())
        with self.assertRaises(RuntimeError):
            compare.check_answer("x1", 502, b"{}")

    def test_json_transform_runs(self):
        _, text = compare.source("py-json", "j")
        ns = {}
        exec(compile(text, "app.py", "exec"), ns)
        out = ns["handler"]({}, None)
        self.assertEqual(out["customers"], 17)

    def test_dockerfile_has_base_dependencies_and_code(self):
        d = compare.dockerfile("py-numpy", ["python3-numpy", "python3-six"], "code")
        lines = d.splitlines()
        self.assertEqual(lines[0], "FROM localhost/bench-python3")
        self.assertIn("python3-numpy python3-six", d)
        self.assertIn("COPY code/ /var/task/", d)
        self.assertEqual(lines[-1], 'CMD ["app.handler"]')
        node = compare.dockerfile("node-hello", [], "code")
        self.assertTrue(node.startswith("FROM localhost/bench-nodejs\n"))
        self.assertNotIn("RUN", node)

    def test_base_images_repeat_the_runtime_dockerfiles_apt_steps(self):
        for lang, rt in (("python", "python3"), ("node", "nodejs")):
            strata = (BENCH.parent / "runtimes" / rt / "Dockerfile").read_text()
            run = next(line for line in strata.splitlines() if "apt-get install" in line).strip()
            self.assertIn(run, compare.base_dockerfile(lang))


class Metrics(unittest.TestCase):
    TEXT = (
        'strata_cold_starts_total{function="a",kind="pool_hit"} 3\n'
        'strata_cold_starts_total{function="a",kind="pool_miss"} 1\n'
        'strata_instances{state="generic"} 4\n'
    )

    def test_kind_from_counter_deltas(self):
        after_hit = self.TEXT.replace('"pool_hit"} 3', '"pool_hit"} 4')
        after_miss = self.TEXT.replace('"pool_miss"} 1', '"pool_miss"} 2')
        self.assertEqual(compare.Strata.cold_kind(compare.Strata, self.TEXT, after_hit, "a"), "pool_hit")
        self.assertEqual(compare.Strata.cold_kind(compare.Strata, self.TEXT, after_miss, "a"), "pool_miss")
        self.assertEqual(compare.Strata.cold_kind(compare.Strata, self.TEXT, self.TEXT, "a"), "unknown")

    def test_instances_by_state(self):
        self.assertEqual(compare.Strata.instances(compare.Strata, self.TEXT, "generic"), 4)
        self.assertEqual(compare.Strata.instances(compare.Strata, self.TEXT, "starting"), 0)


@unittest.skipUnless(importlib.util.find_spec("matplotlib"), "matplotlib is not installed for this Python (apt install python3-matplotlib)")
class Report(unittest.TestCase):
    def test_renders_tables_charts_and_the_slower_section(self):
        import report

        warm = lambda p50, rps: {"clients": 1, "window_s": 1, "requests": 10, "errors": 0, "rps": rps,  # noqa: E731
                                 "latency_ms": compare.summary([p50, p50 * 2]), "by_workload": {"py-hello": compare.summary([p50])}}
        rnd = {
            "n": 1, "workloads": {"py-hello": 1},
            "strata_disk_before": 100, "strata_disk": 200, "baseline_disk_before": 100, "baseline_disk": 5000,
            "strata_counts_before": {"images": 1, "runtimes": 4, "layers": 9},
            "strata_counts": {"images": 1, "runtimes": 4, "layers": 9},
            "baseline_counts_before": {"images": 5, "layers": 9},
            "baseline_counts": {"images": 6, "layers": 10, "function_images": 1, "function_image_bytes": 300 << 20},
            "strata_deploy": [{"fn": "f", "workload": "py-hello", "code_bytes": 300, "create_s": 0.05, "first_s": 0.1, "deploy_s": 0.15, "kind": "pool_hit"}],
            "baseline_deploy": [{"fn": "f", "workload": "py-hello", "build_s": 2.0, "first_s": 0.5, "deploy_s": 2.5}],
            "strata_warm": warm(1.0, 500), "baseline_warm": warm(0.3, 900),
            "strata_memory": [{"workload": "py-hello", "pss": 6 << 20}],
            "baseline_memory": [{"workload": "py-hello", "pss": 11 << 20}],
        }
        res = {
            "meta": {"date": "d", "mode": "quick", "n": [1], "cold_runs": 1, "warm_seconds": 1,
                     "machine": {"cpu": "c", "cores": 2, "memory_bytes": 1 << 30, "os": "o", "kernel": "k",
                                 "podman": "p", "runc": "r", "python": "3"},
                     "load_before": ["1", "1", "1"], "load_after": ["1", "1", "1"], "duration_s": 60},
            "prepare": {"strata_s": 1, "baseline_s": 2}, "rounds": [rnd], "cold": {},
        }
        with tempfile.TemporaryDirectory() as d:
            out = Path(d) / "benchmarks"
            md = Path(d) / "benchmarks.md"
            report.write(res, out, md)
            text = md.read_text()
            for png in ("deploy", "disk", "warm", "memory"):
                self.assertTrue((out / f"{png}.png").stat().st_size > 1000)
                self.assertTrue((out / f"{png}.csv").exists())
            self.assertIn("| 1 | 150 ms |", text)
            self.assertIn("warm latency p50 at N=1: Strata 1.00 ms, baseline 0.30 ms", text)
            self.assertIn("warm throughput at N=1", text)
            self.assertNotIn("deploy p50 at N=1", text.split("## Where Strata is slower")[1])


if __name__ == "__main__":
    unittest.main()

"""Measures each bootstrap's start-up: from process start to its first GET /invocation/next,
with a trivial handler, against the fake Runtime API; and, for a deferred start
(STRATA_SPECIALIZE=1), from the specialization answer to the first GET /invocation/next (what is
left of a cold start on a warm generic instance). Prints the median of N runs.

    python3 runtimes/tests/measure_startup.py [--runs 10] [--python PYTHON] [--node NODE]
                                              [--py-bootstrap PATH] [--no-node]
"""

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time

from fake_runtime_api import FakeRuntimeAPI, start_bootstrap, start_generic_bootstrap

HERE = os.path.dirname(os.path.abspath(__file__))
RUNTIMES = os.path.dirname(HERE)
PY_BOOTSTRAP = os.path.join(RUNTIMES, "python3", "bootstrap", "strata_bootstrap.py")
NODE_BOOTSTRAP = os.path.join(RUNTIMES, "nodejs", "bootstrap", "strata_bootstrap.mjs")


def measure(command, handler, files, runs):
    task_root = tempfile.mkdtemp(prefix="strata-task-")
    try:
        for name, text in files.items():
            with open(os.path.join(task_root, name), "w") as f:
                f.write(text)
        samples = []
        for _ in range(runs + 1):  # the first run warms the page cache and is dropped
            api = FakeRuntimeAPI()
            try:
                start = time.monotonic()
                proc, out, err = start_bootstrap(command, api, handler, task_root)
                got = api.wait(lambda: api.next_requests(), timeout=30)
                if not got:
                    raise SystemExit("no /next from %s" % command)
                samples.append((got[0]["time"] - start) * 1000)
                proc.kill()
                proc.wait()
                out.close()
                err.close()
            finally:
                api.close()
        return samples[1:]
    finally:
        shutil.rmtree(task_root, True)


def measure_deferred(command, handler, files, runs):
    task_root = tempfile.mkdtemp(prefix="strata-task-")
    try:
        for name, text in files.items():
            with open(os.path.join(task_root, name), "w") as f:
                f.write(text)
        samples = []
        for _ in range(runs + 1):
            api = FakeRuntimeAPI()
            try:
                proc, out, err = start_generic_bootstrap(command, api, "/")
                if not api.wait(lambda: api.specialization_requests(), timeout=30):
                    raise SystemExit("no specialization request from %s" % command)
                start = time.monotonic()
                api.specialize(handler, {"LAMBDA_TASK_ROOT": task_root, "_HANDLER": handler})
                got = api.wait(lambda: api.next_requests(), timeout=30)
                if not got:
                    raise SystemExit("no /next from %s" % command)
                samples.append((got[0]["time"] - start) * 1000)
                proc.kill()
                proc.wait()
                out.close()
                err.close()
            finally:
                api.close()
        return samples[1:]
    finally:
        shutil.rmtree(task_root, True)


def report(label, samples):
    print("%-34s median %6.1f ms   (min %.1f, max %.1f, n=%d)" % (
        label, statistics.median(samples), min(samples), max(samples), len(samples)))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--node", default=shutil.which("node"))
    parser.add_argument("--no-node", dest="node", action="store_const", const=None)
    parser.add_argument("--py-bootstrap", default=PY_BOOTSTRAP,
                        help="another copy of the Python bootstrap (to compare two versions)")
    args = parser.parse_args()
    py_command = [args.python, "-u", os.path.abspath(args.py_bootstrap)]

    py_handler = {"app.py": "def handler(event, context):\n    return event\n"}
    report("python bootstrap (%s)" % args.python,
           measure(py_command, "app.handler", py_handler, args.runs))
    report("python deferred: specialized → /next",
           measure_deferred(py_command, "app.handler", py_handler, args.runs))
    report("python -c pass (baseline)",
           measure_baseline([args.python, "-c", "pass"], args.runs))
    if args.node:
        node_handler = {"index.js": "exports.handler = async (event) => event;\n"}
        report("node bootstrap (%s)" % args.node,
               measure([args.node, NODE_BOOTSTRAP], "index.handler", node_handler, args.runs))
        report("node deferred: specialized → /next",
               measure_deferred([args.node, NODE_BOOTSTRAP], "index.handler", node_handler,
                                args.runs))
        report("node -e 0 (baseline)", measure_baseline([args.node, "-e", "0"], args.runs))


def measure_baseline(command, runs):
    import subprocess

    samples = []
    for _ in range(runs + 1):
        start = time.monotonic()
        subprocess.run(command, check=True)
        samples.append((time.monotonic() - start) * 1000)
    return samples[1:]


if __name__ == "__main__":
    main()

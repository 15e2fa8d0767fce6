"""Per-invocation cost of the Python bootstrap: N sequential invocations of a trivial handler
against the fake Runtime API, all queued at once after a warm-up.

Reports, per invocation: the wall time of the whole loop as the API sees it (interval between
consecutive GET /invocation/next: /next answered → event decoded → handler → POST /response
answered → next /next sent; it includes the fake API's own HTTP handling, which is most of it),
as mean and p50; and the bootstrap process's CPU time (user + system, from /proc) divided by N.

With --client, also the bootstrap's Runtime API client alone (its RuntimeClient, loaded from
--bootstrap into this process): N × (next() + post_response()) against a raw socket server in
another process that answers with canned bytes at once; mean and p50 per pair.

    python3 runtimes/tests/measure_requests.py [--invocations 2000] [--python PYTHON]
                                               [--bootstrap PATH] [--rounds 1] [--client]
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from fake_runtime_api import FakeRuntimeAPI, start_bootstrap

HERE = os.path.dirname(os.path.abspath(__file__))
PY_BOOTSTRAP = os.path.join(os.path.dirname(HERE), "python3", "bootstrap", "strata_bootstrap.py")
WARMUP = 50


def cpu_seconds(pid):
    """User + system CPU time of a process, from /proc (None where there is no /proc)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(python, bootstrap, invocations):
    task_root = tempfile.mkdtemp(prefix="strata-task-")
    api = FakeRuntimeAPI()
    proc = out = err = None
    try:
        with open(os.path.join(task_root, "app.py"), "w") as f:
            f.write("def handler(event, context):\n    return event\n")
        proc, out, err = start_bootstrap([python, "-u", bootstrap], api, "app.handler", task_root)
        event = {"key": "value", "n": [1, 2, 3]}
        for _ in range(WARMUP):
            api.push(event)
        if not api.wait(lambda: len(api.results) >= WARMUP, timeout=60):
            raise SystemExit("the bootstrap did not answer the warm-up invocations")
        api.wait(lambda: len(api.next_requests()) > WARMUP, timeout=10)
        cpu0 = cpu_seconds(proc.pid)
        first = len(api.next_requests()) - 1  # the /next that will take the first measured event
        for _ in range(invocations):
            api.push(event)
        total = WARMUP + invocations
        if not api.wait(lambda: len(api.results) >= total, timeout=600):
            raise SystemExit("the bootstrap did not answer all invocations")
        api.wait(lambda: len(api.next_requests()) > total, timeout=10)
        cpu1 = cpu_seconds(proc.pid)
        bad = [r for r in api.results.values() if r[0]["kind"] != "response"
               or json.loads(r[0]["body"]) != event]
        if bad:
            raise SystemExit("unexpected replies: %r" % bad[:3])
        times = [r["time"] for r in api.next_requests()][first:first + invocations + 1]
        intervals = [(b - a) * 1e6 for a, b in zip(times, times[1:])]
        cpu = None if cpu0 is None or cpu1 is None else (cpu1 - cpu0) * 1e6 / invocations
        return intervals, cpu
    finally:
        if proc is not None:
            proc.kill()
            proc.wait()
            out.close()
            err.close()
        api.close()
        shutil.rmtree(task_root, True)


CANNED_SERVER = r"""
import socket, sys
NEXT = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        b"Lambda-Runtime-Aws-Request-Id: 8476a536-e9f4-11e8-9739-2dfe598c3fcd\r\n"
        b"Lambda-Runtime-Deadline-Ms: 1542409706888\r\n"
        b"Lambda-Runtime-Invoked-Function-Arn: arn:aws:lambda:local:000000000000:function:hello\r\n"
        b"Lambda-Runtime-Trace-Id: Root=1-5bef4de7-ad49b0e87f6ef6c87fc2e700;Parent=9a9197af755a6419\r\n"
        b"Content-Length: 32\r\n\r\n" b'{"key": "value", "n": [1, 2, 3]}')
ACCEPTED = b"HTTP/1.1 202 Accepted\r\nContent-Type: application/json\r\nContent-Length: 15\r\n\r\n{\"status\":\"OK\"}"
listener = socket.socket()
listener.bind(("127.0.0.1", 0))
listener.listen(1)
print(listener.getsockname()[1], flush=True)
conn, _ = listener.accept()
conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
buf = b""
while True:
    while b"\r\n\r\n" not in buf:
        data = conn.recv(65536)
        if not data:
            sys.exit(0)
        buf += data
    head, buf = buf.split(b"\r\n\r\n", 1)
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.lower() == b"content-length":
            length = int(value)
    while len(buf) < length:
        buf += conn.recv(65536)
    buf = buf[length:]
    conn.sendall(NEXT if head.startswith(b"GET") else ACCEPTED)
"""


def measure_client(python, bootstrap, pairs):
    import importlib.util

    spec = importlib.util.spec_from_file_location("bootstrap_under_test", bootstrap)
    module = importlib.util.module_from_spec(spec)
    sys.dont_write_bytecode = True  # no __pycache__ next to the bootstrap
    spec.loader.exec_module(module)
    server = subprocess.Popen([python, "-c", CANNED_SERVER], stdout=subprocess.PIPE, text=True)
    try:
        port = int(server.stdout.readline())
        client = module.RuntimeClient("127.0.0.1:%d" % port)
        payload = b'{"key": "value", "n": [1, 2, 3]}'
        samples = []
        for i in range(pairs + 200):
            start = time.perf_counter()
            headers, body = client.next()
            client.post_response(headers.get("Lambda-Runtime-Aws-Request-Id"), payload)
            if i >= 200:  # warm-up
                samples.append((time.perf_counter() - start) * 1e6)
        client.conn.close()
        return samples
    finally:
        server.kill()
        server.wait()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--invocations", type=int, default=2000)
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--bootstrap", default=PY_BOOTSTRAP)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--client", action="store_true",
                        help="also measure the Runtime API client alone")
    args = parser.parse_args()
    for _ in range(args.rounds):
        intervals, cpu = measure(args.python, args.bootstrap, args.invocations)
        print("%s: N=%d  wall/invocation mean %.0f µs  p50 %.0f µs  p90 %.0f µs   "
              "bootstrap CPU/invocation %s" % (
                  args.bootstrap, len(intervals), statistics.mean(intervals),
                  statistics.median(intervals),
                  statistics.quantiles(intervals, n=10)[-1],
                  "n/a" if cpu is None else "%.0f µs" % cpu))
        if args.client:
            pairs = measure_client(args.python, args.bootstrap, args.invocations)
            print("%s: client only, N=%d next+response pairs: mean %.0f µs  p50 %.0f µs" % (
                args.bootstrap, len(pairs), statistics.mean(pairs), statistics.median(pairs)))


if __name__ == "__main__":
    main()

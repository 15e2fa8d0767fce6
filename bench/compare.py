#!/usr/bin/env python3
"""Strata side by side with the image-per-function status quo, on one machine, in one run.

The baseline builds each function as its own image (Dockerfile = runtime base + dependencies +
code) with podman and runs it as its own container; Strata deploys the same code onto shared
runtimes. Both start from the same Debian root file system and install the same Debian packages.

Measured for N functions (a mix of five workloads) at each N of --n:
  deploy        new code -> first answer (image build + container start, or code upload + first
                invocation)
  disk          bytes under each system's storage, images and layers
  cold          first answers of the deploy loop; plus, per workload, repeated cold starts:
                baseline `podman run` until the function answers, Strata pool hit and pool miss
  warm          p50 / p99 latency and throughput of warm invocations over the N functions
  memory        proportional set size (PSS) of each idle warm instance's processes
  upgrade       adding a Debian package to the numpy functions' environment until every affected
                function answers with it (Strata: package + runtime update; baseline: rebuild
                and restart every affected image)

Expects a running Strata server (STRATA_URL, STRATA_TOKEN, STRATA_DATA) with the built-in python3
and nodejs runtimes, as scripts/bench sets up; podman, runc and python3-matplotlib installed.
Writes docs/benchmarks.md, docs/benchmarks/*.png with a CSV beside each, and the raw figures as
docs/benchmarks/results.json.
"""

import argparse
import hashlib
import http.client
import json
import math
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BASELINE_DIR = Path(__file__).resolve().parent / "baseline"

# The workloads, in the order functions are assigned to them (function i gets WORKLOADS[i % 5]).
WORKLOADS = ["py-hello", "node-hello", "py-json", "py-numpy", "py-thumb"]
# Per workload: language, Strata runtime, baseline base image, Debian packages it needs.
SPEC = {
    "py-hello": ("python", "python3", []),
    "node-hello": ("node", "nodejs", []),
    "py-json": ("python", "python3", []),
    "py-numpy": ("python", "py-numpy", ["python3-numpy"]),
    "py-thumb": ("python", "py-pillow", ["python3-pil"]),
}
# Strata's composed runtimes and the package each is made of.
COMPOSED = {"py-numpy": ("numpy", "python3-numpy"), "py-pillow": ("pillow", "python3-pil")}
# The upgrade of round k adds UPGRADES[k] (Debian package, Python module) to the numpy workload.
UPGRADES = [
    ("python3-yaml", "yaml"),
    ("python3-six", "six"),
    ("python3-idna", "idna"),
    ("python3-attr", "attr"),
    ("python3-chardet", "chardet"),
]
UPGRADED_WORKLOAD = "py-numpy"
EVENT = {"name": "bench"}
PORT_BASE = 23000
# Strata's pool bounds per runtime during the rounds: min 1 as by default, max 2 instead of 8 so
# that N = 50 function instances plus the four runtimes' pools stay within the server's default
# limit of 64 instances.
ROUND_POOL = (1, 2)


def log(msg):
    print(f"==> {msg}", file=sys.stderr, flush=True)


def now():
    return time.monotonic()


def pct(values, p):
    """The p-th percentile (nearest rank) of values; None when empty."""
    if not values:
        return None
    s = sorted(values)
    k = max(0, min(len(s) - 1, math.ceil(p / 100.0 * len(s)) - 1))
    return s[k]


def summary(values):
    return {
        "n": len(values),
        "p50": pct(values, 50),
        "p99": pct(values, 99),
        "mean": statistics.fmean(values) if values else None,
        "min": min(values) if values else None,
        "max": max(values) if values else None,
    }


def run(cmd, timeout=1800, env=None, check=True):
    """Runs a command; returns its stdout. Raises with its stderr when it fails."""
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    if check and p.returncode != 0:
        raise RuntimeError(
            f"{' '.join(map(str, cmd))} failed ({p.returncode}): {p.stderr.strip()[-2000:]}"
        )
    return p.stdout


def du_bytes(path):
    """Disk usage of a tree on its own file system, hard links counted once."""
    out = run(["du", "-sx", "--block-size=1", str(path)])
    return int(out.split()[0])


# --------------------------------------------------------------------------------------------
# Function code


def source(workload, name):
    """(file name, text) of a function's code; the name in it makes every function's code
    distinct, as new code is."""
    if workload == "node-hello":
        return (
            "index.js",
            f"// bench function {name}\n"
            f"exports.handler = async (event) => ({{ fn: {json.dumps(name)}, "
            "hello: event.name || \"world\" });\n",
        )
    head = f"# bench function {name}\nimport importlib.util\nNAME = {json.dumps(name)}\n"
    check = (
        "\ndef has(event):\n"
        "    check = event.get(\"check\")\n"
        "    return bool(check) and importlib.util.find_spec(check) is not None\n"
    )
    if workload == "py-hello":
        body = (
            "def handler(event, context):\n"
            "    return {\"fn\": NAME, \"hello\": event.get(\"name\", \"world\"), \"has\": has(event)}\n"
        )
    elif workload == "py-json":
        body = (
            "import json\n"
            "ORDERS = [{\"id\": i, \"customer\": \"c%d\" % (i % 17),\n"
            "           \"items\": [{\"sku\": \"s%d\" % (j % 5), \"qty\": j % 3 + 1, \"price\": 1.25 * (j + 1)}\n"
            "                     for j in range(i % 7 + 1)]} for i in range(200)]\n"
            "def handler(event, context):\n"
            "    orders = json.loads(json.dumps(event.get(\"orders\") or ORDERS))\n"
            "    totals = {}\n"
            "    for o in orders:\n"
            "        t = sum(it[\"qty\"] * it[\"price\"] for it in o[\"items\"])\n"
            "        totals[o[\"customer\"]] = round(totals.get(o[\"customer\"], 0) + t, 2)\n"
            "    top = sorted(totals.items(), key=lambda kv: -kv[1])[:3]\n"
            "    return {\"fn\": NAME, \"customers\": len(totals), \"top\": top, \"has\": has(event)}\n"
        )
    elif workload == "py-numpy":
        body = (
            "import numpy as np\n"
            "def handler(event, context):\n"
            "    m = np.arange(4096, dtype=np.float64).reshape(64, 64)\n"
            "    return {\"fn\": NAME, \"trace\": float(np.trace(m @ m.T)), \"has\": has(event)}\n"
        )
    elif workload == "py-thumb":
        body = (
            "import io\n"
            "from PIL import Image\n"
            "_buf = io.BytesIO()\n"
            "Image.linear_gradient(\"L\").resize((1024, 768)).convert(\"RGB\").save(_buf, \"JPEG\")\n"
            "PHOTO = _buf.getvalue()\n"
            "def handler(event, context):\n"
            "    im = Image.open(io.BytesIO(PHOTO))\n"
            "    im.thumbnail((128, 128))\n"
            "    out = io.BytesIO()\n"
            "    im.save(out, \"PNG\")\n"
            "    return {\"fn\": NAME, \"size\": list(im.size), \"png_bytes\": len(out.getvalue()), \"has\": has(event)}\n"
        )
    else:
        raise ValueError(workload)
    return ("app.py", head + check + body)


def handler_of(workload):
    return "index.handler" if workload == "node-hello" else "app.handler"


def write_code(workload, name, directory):
    directory.mkdir(parents=True, exist_ok=True)
    fname, text = source(workload, name)
    (directory / fname).write_text(text)
    return directory


def check_answer(name, status, body):
    if status != 200:
        raise RuntimeError(f"{name} answered {status}: {body[:300]!r}")
    try:
        v = json.loads(body)
    except ValueError:
        raise RuntimeError(f"{name} answered non-JSON: {body[:300]!r}") from None
    if not isinstance(v, dict) or v.get("fn") != name:
        raise RuntimeError(f"{name} answered something else: {body[:300]!r}")
    return v


# --------------------------------------------------------------------------------------------
# HTTP


class Conn:
    """One keep-alive HTTP/1.1 connection, reopened when the server closed it."""

    def __init__(self, host, port, timeout=120):
        self.host, self.port, self.timeout = host, port, timeout
        self.c = None

    def post(self, path, body, headers):
        for attempt in (0, 1):
            if self.c is None:
                self.c = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
                self.c.connect()
                self.c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                self.c.request("POST", path, body=body, headers=headers)
                r = self.c.getresponse()
                data = r.read()
                return r.status, data, r
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                self.close()
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def get(self, path, headers):
        if self.c is None:
            self.c = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        self.c.request("GET", path, headers=headers)
        r = self.c.getresponse()
        return r.status, r.read()

    def close(self):
        if self.c is not None:
            self.c.close()
            self.c = None


# --------------------------------------------------------------------------------------------
# Strata


class Strata:
    def __init__(self, binary, url, token, data):
        self.binary, self.url, self.token, self.data = binary, url, token, Path(data)
        u = urllib.parse.urlparse(url)
        self.host, self.port = u.hostname, u.port or 80
        absolute = os.path.abspath(data)
        tag = hashlib.sha256(absolute.encode()).hexdigest()[:12]
        self.runc_root = f"/run/strata/{tag}/runc"
        self.env = dict(os.environ, STRATA_URL=url, STRATA_TOKEN=token)

    def conn(self):
        return Conn(self.host, self.port)

    def headers(self):
        return {"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"}

    def cli(self, *args, timeout=3600):
        out = run([self.binary, *args, "-o", "json"], timeout=timeout, env=self.env)
        return json.loads(out) if out.strip() else None

    def invoke(self, conn, name, event=EVENT, retry_busy=False):
        """One invocation; with retry_busy, a 429 (no capacity yet) is retried for up to 30 s."""
        deadline = now() + 30
        while True:
            status, body, r = conn.post(
                f"/v1/functions/{name}/invoke", json.dumps(event).encode(), self.headers()
            )
            if status == 429 and retry_busy and now() < deadline:
                time.sleep(0.05)
                continue
            return status, body, r.getheader("x-strata-cold-start")

    def metrics(self, conn):
        status, body = conn.get("/metrics", self.headers())
        if status != 200:
            raise RuntimeError(f"/metrics answered {status}")
        return body.decode()

    @staticmethod
    def metric(text, name, labels):
        for line in text.splitlines():
            if not line.startswith(name + "{") and line.split(" ")[0] != name:
                continue
            series, _, value = line.rpartition(" ")
            if all(f'{k}="{v}"' in series for k, v in labels.items()):
                return float(value)
        return 0.0

    def instances(self, text, state):
        return int(self.metric(text, "strata_instances", {"state": state}))

    def cold_kind(self, before, after, name):
        d = {}
        for kind in ("pool_hit", "pool_miss"):
            lab = {"function": name, "kind": kind}
            d[kind] = self.metric(after, "strata_cold_starts_total", lab) - self.metric(
                before, "strata_cold_starts_total", lab
            )
        if d == {"pool_hit": 1, "pool_miss": 0}:
            return "pool_hit"
        if d == {"pool_hit": 0, "pool_miss": 1}:
            return "pool_miss"
        return "unknown"

    def wait_metrics(self, conn, what, cond, timeout=300):
        deadline = now() + timeout
        while True:
            text = self.metrics(conn)
            if cond(text):
                return text
            if now() > deadline:
                raise RuntimeError(f"timed out waiting for {what}")
            time.sleep(0.02)

    def set_pool(self, runtime, lo, hi):
        self.cli("runtime", "pool", runtime, "--min", str(lo), "--max", str(hi))

    def containers(self):
        """(id, init pid) of every running instance of this server."""
        out = run(["runc", "--root", self.runc_root, "list", "-f", "json"], check=False)
        items = json.loads(out) if out.strip() and out.strip() != "null" else []
        return [(c["id"], c["pid"]) for c in items if c.get("status") == "running"]

    def disk(self):
        return du_bytes(self.data)

    def counts(self):
        images = self.cli("image", "ls") or []
        runtimes = self.cli("runtime", "ls") or []
        layers_dir = self.data / "layers"
        layers = len([p for p in layers_dir.iterdir()]) if layers_dir.is_dir() else 0
        return {"images": len(images), "runtimes": len(runtimes), "layers": layers}


# --------------------------------------------------------------------------------------------
# Baseline: podman


class Podman:
    def __init__(self, work):
        self.work = work
        self.root = work / "storage"
        self.runroot = Path("/run/strata-bench-podman")
        self.conf = work / "containers.conf"
        self.ctx = work / "contexts"
        work.mkdir(parents=True, exist_ok=True)
        # runc and no default ulimits (ARCHITECTURE.md); cgroupfs and file events: no systemd.
        self.conf.write_text(
            "[containers]\ndefault_ulimits = []\n\n"
            "[engine]\nruntime = \"runc\"\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\n"
        )
        self.env = dict(os.environ, CONTAINERS_CONF=str(self.conf))
        self.ports = {}

    def cmd(self, *args):
        return [
            "podman", "--root", str(self.root), "--runroot", str(self.runroot),
            "--storage-driver", "overlay", *args,
        ]

    def __call__(self, *args, timeout=3600, check=True):
        return run(self.cmd(*args), timeout=timeout, env=self.env, check=check)

    def has_image(self, ref):
        return subprocess.run(
            self.cmd("image", "exists", ref), env=self.env, capture_output=True
        ).returncode == 0

    def build(self, tag, context):
        self("build", "--network", "host", "--layers", "-q", "-t", tag, str(context))

    def start(self, name, tag, port):
        # The same limits as Strata's runtime defaults: 256 MiB, one CPU.
        self("run", "-d", "--name", name, "--network", "host", "--memory", "256m", "--cpus", "1",
             "-e", f"PORT={port}", tag)
        self.ports[name] = port

    def remove(self, *names):
        if names:
            self("rm", "-f", "-t", "0", *names, check=False)
        for n in names:
            self.ports.pop(n, None)

    def pid(self, name):
        return int(self("inspect", "--format", "{{.State.Pid}}", name).strip())

    def disk(self):
        return du_bytes(self.root)

    def counts(self):
        ids = self("images", "-q", "--no-trunc").split()
        all_ids = self("images", "-a", "-q", "--no-trunc").split()
        layers = set()
        if all_ids:
            for img in json.loads(self("image", "inspect", *sorted(set(all_ids)))):
                layers.update(img.get("RootFS", {}).get("Layers", []))
        fn_bytes = 0
        fn_images = 0
        if ids:
            for img in json.loads(self("image", "inspect", *sorted(set(ids)))):
                if any(t.startswith("localhost/fn-") for t in img.get("RepoTags") or []):
                    fn_images += 1
                    fn_bytes += int(img.get("Size") or 0)
        return {"images": len(set(ids)), "images_all": len(set(all_ids)), "layers": len(layers),
                "function_images": fn_images, "function_image_bytes": fn_bytes}


def dockerfile(workload, apt, name_dir):
    lang = SPEC[workload][0]
    base = "localhost/bench-nodejs" if lang == "node" else "localhost/bench-python3"
    lines = [f"FROM {base}"]
    if apt:
        lines.append(
            "RUN apt-get update \\\n && DEBIAN_FRONTEND=noninteractive apt-get install -y "
            f"--no-install-recommends {' '.join(apt)} \\\n"
            " && rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb"
        )
    lines.append(f"COPY {name_dir}/ /var/task/")
    lines.append(f"CMD [\"{handler_of(workload)}\"]")
    return "\n".join(lines) + "\n"


def base_dockerfile(lang):
    """The baseline's runtime base: the same steps as runtimes/<lang>/Dockerfile, with the
    baseline's HTTP entry point instead of Strata's bootstrap."""
    if lang == "python":
        return (
            "FROM localhost/bench-minbase\n"
            "RUN apt-get update \\\n"
            " && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3 ca-certificates \\\n"
            " && rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb\n"
            "ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 LANG=C.UTF-8\n"
            "WORKDIR /var/task\n"
            "COPY serve.py /opt/bench/serve.py\n"
            "ENTRYPOINT [\"python3\", \"-u\", \"/opt/bench/serve.py\"]\n"
        )
    return (
        "FROM localhost/bench-minbase\n"
        "RUN apt-get update \\\n"
        " && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends nodejs ca-certificates \\\n"
        " && rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb\n"
        "ENV NODE_ENV=production LANG=C.UTF-8\n"
        "WORKDIR /var/task\n"
        "COPY serve.mjs /opt/bench/serve.mjs\n"
        "ENTRYPOINT [\"node\", \"/opt/bench/serve.mjs\"]\n"
    )


def wait_answer(conn, name, event=EVENT, timeout=120, want_has=None):
    """Posts the event to a baseline container until it answers (and, with want_has, until its
    answer says so)."""
    deadline = now() + timeout
    last = None
    while now() < deadline:
        try:
            status, body, _ = conn.post("/", json.dumps(event).encode(),
                                        {"Content-Type": "application/json"})
            v = check_answer(name, status, body)
            if want_has is None or v.get("has") == want_has:
                return v
            last = f"answered has={v.get('has')}"
        except (ConnectionRefusedError, ConnectionResetError, http.client.RemoteDisconnected,
                BrokenPipeError, socket.timeout) as e:
            last = repr(e)
            conn.close()
        time.sleep(0.005)
    raise RuntimeError(f"{name} did not answer within {timeout}s ({last})")


# --------------------------------------------------------------------------------------------
# Memory of an instance


def cgroup_procs(pid):
    """The processes in pid's memory cgroup (v1 or v2), and the cgroup's charge in bytes."""
    v1 = v2 = None
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            v1 = path
        elif controllers == "":
            v2 = path
    if v1 is not None:
        d = Path("/sys/fs/cgroup/memory") / v1.lstrip("/")
        charge_file = d / "memory.usage_in_bytes"
    else:
        d = Path("/sys/fs/cgroup") / (v2 or "/").lstrip("/")
        charge_file = d / "memory.current"
    procs_file = d / "cgroup.procs"
    procs = [int(p) for p in procs_file.read_text().split()] if procs_file.exists() else [pid]
    charge = int(charge_file.read_text()) if charge_file.exists() else None
    return procs, charge


def instance_memory(pid):
    procs, charge = cgroup_procs(pid)
    pss = rss = 0
    for p in procs:
        try:
            for line in Path(f"/proc/{p}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    pss += int(line.split()[1]) * 1024
                elif line.startswith("Rss:"):
                    rss += int(line.split()[1]) * 1024
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            pass
    return {"pss": pss, "rss": rss, "cgroup": charge, "procs": len(procs)}


def function_in(pid):
    """The bench function whose code is at /var/task of a container (by its first line)."""
    for f in ("app.py", "index.js"):
        try:
            first = Path(f"/proc/{pid}/root/var/task/{f}").read_text().split("\n", 1)[0]
        except (FileNotFoundError, NotADirectoryError, PermissionError, ProcessLookupError):
            continue
        m = re.match(r"^(#|//) bench function (\S+)$", first)
        if m:
            return m.group(2)
    return None


# --------------------------------------------------------------------------------------------
# The suite


class Suite:
    def __init__(self, args):
        self.a = args
        url = os.environ.get("STRATA_URL", "http://127.0.0.1:7070")
        token = os.environ.get("STRATA_TOKEN")
        data = os.environ.get("STRATA_DATA")
        if not token or not data:
            raise SystemExit("compare.py needs STRATA_URL, STRATA_TOKEN and STRATA_DATA (run it through scripts/bench --scenario compare)")
        self.s = Strata(args.strata_bin, url, token, data)
        self.pm = Podman(Path(args.work).resolve())
        self.code = Path(args.work).resolve() / "code"
        shutil.rmtree(self.code, ignore_errors=True)
        self.code.mkdir(parents=True)
        self.run_id = f"{os.getpid()}"
        self.upgrades_done = []  # Debian packages added to the numpy workload so far
        self.results = {"rounds": [], "cold": {}, "prepare": {}}
        self.port = PORT_BASE

    def next_port(self):
        self.port += 1
        return self.port

    def apt_for(self, workload):
        pkgs = list(SPEC[workload][2])
        if workload == UPGRADED_WORKLOAD:
            pkgs += [p for p, _ in self.upgrades_done]
        return pkgs

    # ---- preparation: the runtimes of both systems (not part of any deploy figure)

    def prepare(self):
        pm, s = self.pm, self.s
        t = now()
        if not pm.has_image("localhost/bench-minbase"):
            log(f"baseline: podman import {self.a.rootfs}")
            pm("import", str(self.a.rootfs), "localhost/bench-minbase")
        for lang in ("python", "node"):
            ctx = pm.ctx / f"base-{lang}"
            shutil.rmtree(ctx, ignore_errors=True)
            ctx.mkdir(parents=True)
            (ctx / "Dockerfile").write_text(base_dockerfile(lang))
            entry = "serve.py" if lang == "python" else "serve.mjs"
            shutil.copy(BASELINE_DIR / entry, ctx / entry)
            tag = "localhost/bench-python3" if lang == "python" else "localhost/bench-nodejs"
            log(f"baseline: base image {tag}")
            pm.build(tag, ctx)
        # Build cache primed with each workload's dependency layer, as on a CI machine that has
        # built these functions before; kept tagged so the cache survives between rounds.
        for w in WORKLOADS:
            if self.apt_for(w):
                self.baseline_build(w, f"prime-{w}", tag=f"localhost/bench-prime-{w}")
        self.results["prepare"]["baseline_s"] = now() - t
        t = now()
        for rt, (pkg, apt) in COMPOSED.items():
            log(f"strata: package {pkg} (--apt {apt}) and runtime {rt}")
            s.cli("package", "create", pkg, "--base", "python3", "--apt", apt)
            try:
                s.cli("runtime", "describe", rt)
            except RuntimeError:
                s.cli("runtime", "create", rt, "--base", "python3", "--packages", pkg)
        self.results["prepare"]["strata_s"] = now() - t
        for rt in self.runtimes():
            s.set_pool(rt, *ROUND_POOL)

    def baseline_build(self, workload, name, tag=None):
        ctx = self.pm.ctx / name
        shutil.rmtree(ctx, ignore_errors=True)
        ctx.mkdir(parents=True)
        write_code(workload, name, ctx / "code")
        (ctx / "Dockerfile").write_text(dockerfile(workload, self.apt_for(workload), "code"))
        self.pm.build(tag or f"localhost/fn-{name}", ctx)

    # ---- one round: N functions

    def names(self, n, prefix):
        return [(f"{prefix}{self.run_id}-{i:03d}-{WORKLOADS[i % len(WORKLOADS)]}",
                 WORKLOADS[i % len(WORKLOADS)]) for i in range(n)]

    def round(self, n, k):
        log(f"round N={n}")
        s, pm = self.s, self.pm
        r = {"n": n, "workloads": {w: sum(1 for i in range(n) if WORKLOADS[i % 5] == w) for w in WORKLOADS}}
        conn = s.conn()
        fns = self.names(n, f"r{k}-")

        # Disk before (each system with its runtimes only).
        r["strata_disk_before"] = s.disk()
        r["baseline_disk_before"] = pm.disk()
        r["strata_counts_before"] = s.counts()
        r["baseline_counts_before"] = pm.counts()

        # Deploy: Strata.
        dep = []
        for name, w in fns:
            code = write_code(w, name, self.code / name)
            t0 = now()
            s.cli("fn", "create", name, "--runtime", SPEC[w][1], "--code", str(code),
                  "--handler", handler_of(w))
            t1 = now()
            before = s.metrics(conn)
            t2 = now()
            status, body, _ = s.invoke(conn, name, retry_busy=True)
            t3 = now()
            check_answer(name, status, body)
            kind = s.cold_kind(before, s.metrics(conn), name)
            code_bytes = sum(f.stat().st_size for f in code.iterdir())
            dep.append({"fn": name, "workload": w, "code_bytes": code_bytes,
                        "create_s": t1 - t0, "first_s": t3 - t2,
                        "deploy_s": (t1 - t0) + (t3 - t2), "kind": kind})
        r["strata_deploy"] = dep
        log(f"  strata: {n} deployed")

        # Deploy: baseline.
        dep = []
        for name, w in fns:
            t0 = now()
            self.baseline_build(w, name)
            t1 = now()
            port = self.next_port()
            pm.start(f"fn-{name}", f"localhost/fn-{name}", port)
            wait_answer(Conn("127.0.0.1", port), name)
            t2 = now()
            dep.append({"fn": name, "workload": w, "build_s": t1 - t0, "first_s": t2 - t1,
                        "deploy_s": t2 - t0})
        r["baseline_deploy"] = dep
        log(f"  baseline: {n} built and started")

        r["strata_disk"] = s.disk()
        r["baseline_disk"] = pm.disk()
        r["strata_counts"] = s.counts()
        r["baseline_counts"] = pm.counts()

        # Warm, once no instance is starting (pool refills after the deploys' misses).
        try:
            s.wait_metrics(conn, "no instance starting", lambda m: s.instances(m, "starting") == 0, timeout=60)
        except RuntimeError as e:
            log(f"warning: {e}")
        r["strata_warm"] = self.warm(fns, baseline=False)
        r["baseline_warm"] = self.warm(fns, baseline=True)
        log(f"  warm: strata {r['strata_warm']['rps']:.0f} req/s, baseline {r['baseline_warm']['rps']:.0f} req/s")

        # Memory of idle warm instances.
        r["strata_memory"], r["baseline_memory"] = self.memory(fns)

        # Upgrade.
        affected = [(name, w) for name, w in fns if w == UPGRADED_WORKLOAD]
        if affected and k < len(UPGRADES):
            r["upgrade"] = self.upgrade(affected, UPGRADES[k])

        # Tear down.
        for name, _ in fns:
            try:
                s.cli("fn", "rm", name)
            except RuntimeError as e:
                log(f"warning: {e}")
        pm.remove(*[f"fn-{name}" for name, _ in fns])
        pm("rmi", "-f", *[f"localhost/fn-{name}" for name, _ in fns], check=False)
        pm("image", "prune", "-f", check=False)
        self.results["rounds"].append(r)
        self.save()

    def warm(self, fns, baseline):
        """Warm invocations over all the round's functions: min(2, N) clients, each with its
        own share of the functions, round robin; an untimed warm-up, then a timed window."""
        s = self.s
        clients = min(2, len(fns))
        shares = [fns[c::clients] for c in range(clients)]
        window = self.a.warm_seconds
        warmup_rounds = 2
        results = [None] * clients
        barrier = threading.Barrier(clients)

        def client(c):
            share = shares[c]
            if baseline:
                conns = {name: Conn("127.0.0.1", self.pm.ports[f"fn-{name}"]) for name, _ in share}

                def call(name):
                    st, body, _ = conns[name].post("/", json.dumps(EVENT).encode(),
                                                   {"Content-Type": "application/json"})
                    return st, body
            else:
                sc = s.conn()

                def call(name):
                    return s.invoke(sc, name)[:2]
            for _ in range(warmup_rounds):
                for name, _ in share:
                    st, body = call(name)
                    check_answer(name, st, body)
            barrier.wait()
            lat, errors, i, by = [], 0, 0, {}
            end = now() + window
            while True:
                t = now()
                if t >= end:
                    break
                name, w = share[i % len(share)]
                i += 1
                try:
                    st, body = call(name)
                    check_answer(name, st, body)
                    lat.append((now() - t) * 1000)
                    by.setdefault(w, []).append(lat[-1])
                except Exception:  # counted, the loop goes on
                    errors += 1
            results[c] = (lat, errors, by)

        threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if any(x is None for x in results):
            raise RuntimeError("a warm client failed")
        lat = [x for r in results for x in r[0]]
        by = {}
        for r in results:
            for w, xs in r[2].items():
                by.setdefault(w, []).extend(xs)
        return {"clients": clients, "window_s": window, "requests": len(lat),
                "errors": sum(r[1] for r in results), "rps": len(lat) / window,
                "latency_ms": summary(lat),
                "by_workload": {w: summary(xs) for w, xs in by.items()}}

    def memory(self, fns):
        """PSS of each idle warm instance, per workload. Strata's generic pool instances are
        stopped first (pools at 0) so that every instance left is a function's."""
        s = self.s
        conn = s.conn()
        names = {name: w for name, w in fns}
        for rt in self.runtimes():
            s.set_pool(rt, 0, 0)
        s.wait_metrics(conn, "empty pools", lambda m: s.instances(m, "generic") == 0
                       and s.instances(m, "starting") == 0)
        time.sleep(1)
        strata = []
        for cid, pid in s.containers():
            fn = function_in(pid)
            if fn in names:
                strata.append(dict(instance_memory(pid), fn=fn, workload=names[fn]))
        for rt in self.runtimes():
            s.set_pool(rt, *ROUND_POOL)
        baseline = []
        for name, w in fns:
            m = instance_memory(self.pm.pid(f"fn-{name}"))
            baseline.append(dict(m, fn=name, workload=w))
        return strata, baseline

    def runtimes(self):
        return ["python3", "nodejs", *COMPOSED]

    def upgrade(self, affected, pkg):
        apt, module = pkg
        s, pm = self.s, self.pm
        log(f"  upgrade: add {apt} to {len(affected)} {UPGRADED_WORKLOAD} functions")
        conn = s.conn()
        ev = dict(EVENT, check=module)
        for name, _ in affected:  # the module is not there before
            st, body, _ = s.invoke(conn, name, ev)
            if check_answer(name, st, body).get("has"):
                raise RuntimeError(f"{module} is already importable in {name} before the upgrade")
        out = {"package": apt, "functions": len(affected)}
        rt = SPEC[UPGRADED_WORKLOAD][1]
        pkgname = f"up-{module}"
        t0 = now()
        s.cli("package", "create", pkgname, "--base", "python3", "--apt", apt)
        t1 = now()
        s.cli("runtime", "update", rt, "--add", pkgname)
        t2 = now()
        for name, _ in affected:
            deadline = now() + 120
            while True:
                st, body, _ = s.invoke(conn, name, ev, retry_busy=True)
                if check_answer(name, st, body).get("has"):
                    break
                if now() > deadline:
                    raise RuntimeError(f"{name} did not see {module} after the runtime update")
                time.sleep(0.01)
        t3 = now()
        out["strata"] = {"package_s": t1 - t0, "update_s": t2 - t1, "functions_s": t3 - t2,
                         "total_s": t3 - t0}
        self.upgrades_done.append(pkg)
        t0 = now()
        build_s = 0.0
        for name, w in affected:
            b0 = now()
            self.baseline_build(w, name)
            build_s += now() - b0
            cname = f"fn-{name}"
            pm.remove(cname)
            port = self.next_port()
            pm.start(cname, f"localhost/fn-{name}", port)
            wait_answer(Conn("127.0.0.1", port), name, ev, want_has=True)
        t1 = now()
        out["baseline"] = {"build_s": build_s, "total_s": t1 - t0}
        # Keep the new dependency layer cached past this round's clean-up, as Strata keeps its
        # package (a cache hit, outside the figures).
        self.baseline_build(UPGRADED_WORKLOAD, f"prime-{UPGRADED_WORKLOAD}",
                            tag=f"localhost/bench-prime-{UPGRADED_WORKLOAD}")
        log(f"  upgrade: strata {out['strata']['total_s']:.1f}s, baseline {out['baseline']['total_s']:.1f}s")
        return out

    # ---- cold starts, per workload

    def cold(self):
        s, pm = self.s, self.pm
        conn = s.conn()
        runs = self.a.cold_runs
        for w in self.a.cold_workloads:
            rt = SPEC[w][1]
            log(f"cold starts: {w} ({runs} runs each)")
            out = {"runtime": rt}
            for mode in ("pool_hit", "pool_miss"):
                for other in self.runtimes():
                    s.set_pool(other, 0, 0)
                if mode == "pool_hit":
                    s.set_pool(rt, 2, 8)
                    ready = lambda m: s.instances(m, "generic") >= 2 and s.instances(m, "starting") == 0  # noqa: E731
                else:
                    ready = lambda m: s.instances(m, "generic") == 0 and s.instances(m, "starting") == 0  # noqa: E731
                samples, kinds = [], []
                for i in range(runs):
                    name = f"c{self.run_id}-{mode[5:]}-{i:03d}-{w}"
                    code = write_code(w, name, self.code / name)
                    s.cli("fn", "create", name, "--runtime", rt, "--code", str(code),
                          "--handler", handler_of(w))
                    before = s.wait_metrics(conn, f"pool ready for {mode}", ready)
                    t = now()
                    st, body, _ = s.invoke(conn, name)
                    samples.append((now() - t) * 1000)
                    check_answer(name, st, body)
                    kinds.append(s.cold_kind(before, s.metrics(conn), name))
                    s.cli("fn", "rm", name)
                out[f"strata_{mode}"] = {"ms": samples, "kinds": kinds,
                                         "summary": summary([x for x, k in zip(samples, kinds) if k == mode])}
            for rt2 in self.runtimes():
                s.set_pool(rt2, *ROUND_POOL)
            # Baseline: the function's image is built; each cold start is `podman run` until it
            # answers.
            name = f"c{self.run_id}-img-{w}"
            self.baseline_build(w, name)
            samples = []
            for i in range(runs):
                port = self.next_port()
                t = now()
                pm.start(f"fn-{name}", f"localhost/fn-{name}", port)
                wait_answer(Conn("127.0.0.1", port), name)
                samples.append((now() - t) * 1000)
                pm.remove(f"fn-{name}")
            pm("rmi", "-f", f"localhost/fn-{name}", check=False)
            out["baseline"] = {"ms": samples, "summary": summary(samples)}
            self.results["cold"][w] = out
            self.save()

    def save(self):
        out = Path(self.a.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.json").write_text(json.dumps(self.results, indent=1) + "\n")

    def cleanup(self):
        """Removes what a failed run left: containers and function images of this run."""
        names = [n for n in self.pm.ports]
        self.pm.remove(*names)


def machine():
    cpu = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem = int(line.split()[1]) * 1024
    def version(cmd):
        try:
            return run(cmd).strip().splitlines()[0]
        except Exception:  # a missing tool is reported as such
            return "unknown"
    return {
        "cpu": cpu, "cores": os.cpu_count(), "memory_bytes": mem,
        "kernel": platform.release(), "os": version(["sh", "-c", ". /etc/os-release; echo $PRETTY_NAME"]),
        "podman": version(["podman", "--version"]), "runc": version(["runc", "--version"]),
        "python": platform.python_version(),
    }


def loadavg():
    return Path("/proc/loadavg").read_text().split()[:3]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="a smoke run: N = 1, 5; 3 cold starts per kind of two workloads; 2 s warm windows")
    p.add_argument("--n", default=None, help="function counts, comma-separated (default 1,10,50)")
    p.add_argument("--cold-runs", type=int, default=None, help="cold starts per workload and kind (default 20)")
    p.add_argument("--warm-seconds", type=float, default=None, help="timed warm window per round (default 10)")
    p.add_argument("--cold-workloads", default=None,
                   help="workloads of the cold-start runs (default py-hello,node-hello,py-numpy; "
                   "quick: py-hello,node-hello)")
    p.add_argument("--strata-bin", default=str(ROOT / "target/release/strata"))
    p.add_argument("--rootfs", default=str(ROOT / "target/test-cache/bookworm-minbase.tar"))
    p.add_argument("--work", default=str(ROOT / "target/bench-compare"))
    p.add_argument("--out", default=str(ROOT / "docs/benchmarks"))
    p.add_argument("--report", default=str(ROOT / "docs/benchmarks.md"))
    a = p.parse_args()
    a.n = [int(x) for x in (a.n or ("1,5" if a.quick else "1,10,50")).split(",")]
    a.cold_runs = a.cold_runs or (3 if a.quick else 20)
    a.warm_seconds = a.warm_seconds or (2.0 if a.quick else 10.0)
    a.cold_workloads = [w for w in (a.cold_workloads or (
        "py-hello,node-hello" if a.quick else "py-hello,node-hello,py-numpy")).split(",") if w]
    for w in a.cold_workloads:
        if w not in SPEC:
            raise SystemExit(f"unknown workload {w!r}: expected one of {', '.join(WORKLOADS)}")
    if any(n < 1 for n in a.n):
        raise SystemExit("--n: function counts must be at least 1")

    suite = Suite(a)
    started = now()
    suite.results["meta"] = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "mode": "quick" if a.quick else "full", "n": a.n, "cold_runs": a.cold_runs,
        "warm_seconds": a.warm_seconds, "machine": machine(), "load_before": loadavg(),
    }
    try:
        suite.prepare()
        for k, n in enumerate(a.n):
            suite.round(n, k)
        suite.cold()
    finally:
        suite.cleanup()
    suite.results["meta"]["load_after"] = loadavg()
    suite.results["meta"]["duration_s"] = now() - started
    suite.save()
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import report  # noqa: E402  (matplotlib is only needed once the figures exist)

    report.write(suite.results, Path(a.out), Path(a.report))
    log(f"done in {suite.results['meta']['duration_s']:.0f}s: {a.report}")


if __name__ == "__main__":
    main()

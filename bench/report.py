"""Turns compare.py's raw figures (results.json) into docs/benchmarks.md and PNG charts, each
chart's data written beside it as CSV."""

import csv
import json
import math
import statistics
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

STRATA = "Strata"
BASE = "image per function (podman)"
COLORS = {STRATA: "#1f77b4", BASE: "#d62728", "Strata pool hit": "#1f77b4",
          "Strata pool miss": "#6baed6"}


def pct(values, p):
    if not values:
        return None
    s = sorted(values)
    k = max(0, min(len(s) - 1, math.ceil(p / 100.0 * len(s)) - 1))
    return s[k]


def med(values):
    return statistics.median(values) if values else None


def fmt_ms(v):
    if v is None:
        return "–"
    if v >= 10000:
        return f"{v / 1000:.1f} s"
    if v >= 100:
        return f"{v:.0f} ms"
    if v >= 10:
        return f"{v:.1f} ms"
    return f"{v:.2f} ms"


def fmt_s(v):
    return "–" if v is None else fmt_ms(v * 1000)


def fmt_bytes(v):
    if v is None:
        return "–"
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if abs(v) >= size:
            return f"{v / size:.1f} {unit}"
    return f"{v} B"


def ratio(base, strata):
    """How many times the baseline's figure is Strata's (higher = Strata better, for costs)."""
    if base is None or strata is None or strata == 0:
        return "–"
    r = base / strata
    return f"{r:.1f}×" if r >= 1.95 or r < 0.95 else f"{r:.2f}×"


def write_csv(path, header, rows):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        for r in rows:
            w.writerow([("" if x is None else (round(x, 4) if isinstance(x, float) else x)) for x in r])


def chart(path, title, xlabel, ylabel, series, logy=False, xs_log=False):
    """series: {label: (xs, ys)}; a line chart."""
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=110)
    for label, (xs, ys) in series.items():
        pts = [(x, y) for x, y in zip(xs, ys) if y is not None]
        if not pts:
            continue
        style = "--" if "p99" in label else "-"
        color = COLORS[STRATA] if label.startswith(STRATA) else COLORS[BASE]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], style, marker="o", label=label, color=color)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if logy:
        ax.set_yscale("log")
    if xs_log:
        ax.set_xscale("log")
    ticks = sorted({x for xs, _ in series.values() for x in xs})
    ax.set_xticks(ticks)
    ax.set_xticklabels([str(t) for t in ticks])
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def bars(path, title, ylabel, groups, series, logy=False):
    """groups: x labels; series: {label: [value per group]}."""
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=110)
    width = 0.8 / max(1, len(series))
    for i, (label, values) in enumerate(series.items()):
        xs = [g + i * width for g in range(len(groups))]
        ax.bar(xs, [v or 0 for v in values], width, label=label, color=COLORS.get(label))
    ax.set_xticks([g + width * (len(series) - 1) / 2 for g in range(len(groups))])
    ax.set_xticklabels(groups)
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    if logy:
        ax.set_yscale("log")
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write(results, out, report):
    out.mkdir(parents=True, exist_ok=True)
    meta = results["meta"]
    rounds = results["rounds"]
    ns = [r["n"] for r in rounds]
    md = []
    slower = []  # (figure, strata, baseline) where Strata is worse

    def worse(what, strata, base, fmt):
        if strata is not None and base is not None and strata > base:
            slower.append(f"{what}: Strata {fmt(strata)}, baseline {fmt(base)}")

    m = meta["machine"]
    md.append("# Benchmarks: Strata and one image per function\n")
    md.append(
        "Strata deploys code onto shared runtimes; the status quo it replaces builds one image per "
        "function (runtime base + dependencies + code) and runs one container per function. "
        "`scripts/bench --scenario compare` measures both on the same machine in one run, with the "
        "same functions, the same Debian root file system and the same Debian packages, and "
        "writes this page, the charts and their data (`docs/benchmarks/`).\n"
    )
    md.append("## Run\n")
    md.append("| | |\n|---|---|")
    md.append(f"| date | {meta['date']} |")
    md.append(f"| mode | `{meta['mode']}` — N = {', '.join(map(str, meta['n']))}; "
              f"{meta['cold_runs']} cold starts per workload and kind; "
              f"{meta['warm_seconds']:g} s warm window per N |")
    md.append(f"| duration | {meta.get('duration_s', 0) / 60:.1f} min (bench/compare.py, preparation included; scripts/bench's release build and Strata's bootstrap come before it) |")
    md.append(f"| machine | {m['cpu']}, {m['cores']} cores, {fmt_bytes(m['memory_bytes'])} RAM; {m['os']}, Linux {m['kernel']} |")
    md.append(f"| software | {m['runc']}; {m['podman']}; Python {m['python']} (clients and charts) |")
    md.append(f"| load average | {' '.join(meta['load_before'])} before, {' '.join(meta.get('load_after', ['?'] * 3))} after "
              "(1, 5, 15 min; the machine is shared, so figures carry that noise) |")
    prep = results.get("prepare", {})
    md.append(f"| preparation (not in any figure) | Strata: packages + composed runtimes {fmt_s(prep.get('strata_s'))}; "
              f"baseline: base images + dependency layers {fmt_s(prep.get('baseline_s'))} |")
    md.append("")

    # ---- headline
    last = rounds[-1] if rounds else None
    if last:
        n = last["n"]
        sd = [d["deploy_s"] for d in last["strata_deploy"]]
        bd = [d["deploy_s"] for d in last["baseline_deploy"]]
        md.append(f"## Headline (N = {n})\n")
        md.append("| figure | Strata | baseline | baseline ÷ Strata |\n|---|---|---|---|")
        md.append(f"| deploy, new code → first answer, median | {fmt_s(med(sd))} | {fmt_s(med(bd))} | {ratio(med(bd), med(sd))} |")
        md.append(f"| deploy, all {n} functions | {fmt_s(sum(sd))} | {fmt_s(sum(bd))} | {ratio(sum(bd), sum(sd))} |")
        sdisk = last["strata_disk"] - last["strata_disk_before"]
        bdisk = last["baseline_disk"] - last["baseline_disk_before"]
        md.append(f"| disk added by {n} functions | {fmt_bytes(sdisk)} | {fmt_bytes(bdisk)} | {ratio(bdisk, sdisk)} |")
        md.append(f"| images added | {last['strata_counts']['images'] + last['strata_counts']['runtimes'] - last['strata_counts_before']['images'] - last['strata_counts_before']['runtimes']} | "
                  f"{last['baseline_counts']['images'] - last['baseline_counts_before']['images']} | |")
        sw, bw = last["strata_warm"], last["baseline_warm"]
        md.append(f"| warm latency p50 | {fmt_ms(sw['latency_ms']['p50'])} | {fmt_ms(bw['latency_ms']['p50'])} | {ratio(bw['latency_ms']['p50'], sw['latency_ms']['p50'])} |")
        md.append(f"| warm throughput ({sw['clients']} clients) | {sw['rps']:.0f} req/s | {bw['rps']:.0f} req/s | {ratio(sw['rps'], bw['rps'])} (Strata ÷ baseline) |")
        smem = [x["pss"] for x in last["strata_memory"]]
        bmem = [x["pss"] for x in last["baseline_memory"]]
        md.append(f"| memory per idle warm instance (PSS, median) | {fmt_bytes(med(smem))} | {fmt_bytes(med(bmem))} | {ratio(med(bmem), med(smem))} |")
        up = last.get("upgrade")
        if up:
            md.append(f"| upgrade of {up['functions']} function{'s' if up['functions'] != 1 else ''} (add `{up['package']}`) | {fmt_s(up['strata']['total_s'])} | {fmt_s(up['baseline']['total_s'])} | {ratio(up['baseline']['total_s'], up['strata']['total_s'])} |")
        cold = results.get("cold", {})
        if "py-hello" in cold:
            c = cold["py-hello"]
            md.append(f"| cold start p50, Python hello (Strata pool hit / miss) | {fmt_ms(c['strata_pool_hit']['summary']['p50'])} / {fmt_ms(c['strata_pool_miss']['summary']['p50'])} | {fmt_ms(c['baseline']['summary']['p50'])} | {ratio(c['baseline']['summary']['p50'], c['strata_pool_hit']['summary']['p50'])} / {ratio(c['baseline']['summary']['p50'], c['strata_pool_miss']['summary']['p50'])} |")
        md.append("")

    md.append("## Method\n")
    md.append(
        "- **Workloads.** N functions, assigned in turn to five workloads: Python hello, Node.js "
        "hello, a Python JSON transform (200 orders aggregated per customer), Python with numpy "
        "(a 64×64 matrix product) and a Pillow thumbnail (a 1024×768 JPEG decoded, thumbnailed to "
        "128 px and encoded as PNG). N = 1 is one Python hello. Every function's code is distinct "
        "(it carries its name), as new code is. numpy and Pillow are Debian's `python3-numpy` and "
        "`python3-pil` on both sides.\n"
        "- **Strata.** The built-in `python3` and `nodejs` runtimes; `py-numpy` and `py-pillow` "
        "are composed from packages (`strata package create numpy --base python3 --apt "
        "python3-numpy`, `strata runtime create py-numpy --base python3 --packages numpy`). A "
        "deploy is `strata fn create NAME --runtime R --code DIR --handler H` followed by the "
        "first invocation through `POST /v1/functions/NAME/invoke`; warm invocations go through "
        "the same API (bearer token, routing, the instance's agent). Each runtime's generic pool "
        "is bounded min 1 max 2 during the rounds (the default max is 8; 2 keeps N = 50 "
        "function instances plus four pools within the server's default 64 instances), and "
        "set as described where a cold-start kind is forced.\n"
        "- **Baseline (the status quo).** One image per function, built by `podman build` from "
        "`FROM <runtime base>` + `RUN apt-get install <dependencies>` + `COPY code /var/task`; "
        "the runtime bases are built from `podman import` of the same Debian root file system "
        "(`target/test-cache/bookworm-minbase.tar`) with the same steps as "
        "`runtimes/python3/Dockerfile` and `runtimes/nodejs/Dockerfile`, plus a small HTTP entry "
        "point (`bench/baseline/serve.py`, `serve.mjs`) that imports the handler and answers "
        "`POST /`. podman uses runc, no default ulimits, cgroupfs and the overlay driver on its "
        "own storage (`target/bench-compare/`), host networking (no NAT in front of the "
        "container) and the limits of Strata's runtime defaults (256 MiB, one CPU). The layer cache is warm: each workload's "
        "dependency layer was built once before the figures (as on a CI runner that built these "
        "functions before), so a function's build is the COPY of its code plus the commit of its "
        "image. A deploy is `podman build` + `podman run -d` until the container answers. "
        "**Cold start** = `podman run` of an already built image until it answers (no image pull: "
        "there is no registry, which favours the baseline). **Warm** = requests straight to the "
        "running container's port, with no gateway or authentication in front (which also "
        "favours the baseline).\n"
        "- **Disk** is `du -sx` of each system's whole storage (Strata's data directory; podman's "
        "storage root), hard links counted once, with every function deployed and running; "
        "\"added\" subtracts the figure before the round's deploys. Layers: Strata's `layers/` "
        "entries; podman's distinct layers of all its images.\n"
        "- **Memory** is the proportional set size (PSS, shared pages divided among their users) "
        "of the processes in each idle warm instance's memory cgroup, after the warm loop; "
        "Strata's generic pool instances are stopped first so that only function instances are "
        "counted. The cgroup's charge (page cache included) is in the raw figures.\n"
        "- **Warm** runs min(2, N) clients, each over its own share of the N functions round "
        "robin, with keep-alive connections, after two untimed rounds.\n"
        "- **Upgrade** adds one Debian package to the numpy workload's environment and waits "
        "until every affected function answers that it can import it. Strata: `strata package "
        "create` (built once) + `strata runtime update py-numpy --add ...`; the functions follow "
        "the runtime's name, so the next invocation runs on the new version. Baseline: rebuild "
        "every affected image (new dependency line; the first build installs it, the others hit "
        "the cache) and replace its container. Each round adds a different package.\n"
        "- Percentiles are nearest-rank over all samples of a figure; \"baseline ÷ Strata\" above "
        "1 means Strata costs less (for throughput the ratio is Strata ÷ baseline).\n"
    )

    # ---- deploy
    md.append("## Deploy: new code → invocable\n")
    md.append("![deploy](benchmarks/deploy.png)\n")
    md.append("| N | Strata p50 | Strata p99 | baseline p50 | baseline p99 | ratio (p50) | Strata, all N | baseline, all N | of which baseline build p50 |\n|---|---|---|---|---|---|---|---|---|")
    rows = []
    for r in rounds:
        sd = [d["deploy_s"] * 1000 for d in r["strata_deploy"]]
        bd = [d["deploy_s"] * 1000 for d in r["baseline_deploy"]]
        bb = [d["build_s"] * 1000 for d in r["baseline_deploy"]]
        rows.append([r["n"], med(sd), pct(sd, 99), med(bd), pct(bd, 99), sum(sd) / 1000, sum(bd) / 1000])
        md.append(f"| {r['n']} | {fmt_ms(med(sd))} | {fmt_ms(pct(sd, 99))} | {fmt_ms(med(bd))} | {fmt_ms(pct(bd, 99))} | {ratio(med(bd), med(sd))} | {fmt_s(sum(sd) / 1000)} | {fmt_s(sum(bd) / 1000)} | {fmt_ms(med(bb))} |")
        worse(f"deploy p50 at N={r['n']}", med(sd), med(bd), fmt_ms)
    write_csv(out / "deploy.csv", ["n", "strata_p50_ms", "strata_p99_ms", "baseline_p50_ms", "baseline_p99_ms", "strata_total_s", "baseline_total_s"], rows)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9.6, 4.0), dpi=110)
    for label, i50, i99, itot, color in ((STRATA, 1, 2, 5, COLORS[STRATA]), (BASE, 3, 4, 6, COLORS[BASE])):
        ax1.plot(ns, [x[i50] for x in rows], "-o", color=color, label=f"{label} p50")
        ax1.plot(ns, [x[i99] for x in rows], "--o", color=color, label=f"{label} p99")
        ax2.plot(ns, [x[itot] for x in rows], "-o", color=color, label=label)
    ax1.set_yscale("log")
    ax1.set_title("Deploy, per function: new code → first answer")
    ax1.set_ylabel("ms (log)")
    ax2.set_title("Deploying all N functions, one after another")
    ax2.set_ylabel("s")
    for ax in (ax1, ax2):
        ax.set_xticks(ns)
        ax.set_xticklabels([str(x) for x in ns])
        ax.set_xlabel("functions (N)")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "deploy.png")
    plt.close(fig)
    md.append("\nThe first answer of each deploy is a cold start; by kind (Strata) and size:\n")
    md.append("| N | Strata first answer p50 / p99 | pool hits / misses | baseline `podman run` → answer p50 / p99 |\n|---|---|---|---|")
    for r in rounds:
        sf = [d["first_s"] * 1000 for d in r["strata_deploy"]]
        bf = [d["first_s"] * 1000 for d in r["baseline_deploy"]]
        hits = sum(1 for d in r["strata_deploy"] if d["kind"] == "pool_hit")
        misses = sum(1 for d in r["strata_deploy"] if d["kind"] == "pool_miss")
        md.append(f"| {r['n']} | {fmt_ms(med(sf))} / {fmt_ms(pct(sf, 99))} | {hits} / {misses} | {fmt_ms(med(bf))} / {fmt_ms(pct(bf, 99))} |")
    md.append("")

    # ---- disk
    md.append("## Disk, images and layers\n")
    md.append("![disk](benchmarks/disk.png)\n")
    md.append("| N | Strata total | Strata added | baseline total | baseline added | ratio (added) | Strata images + runtimes | Strata layers | baseline images | baseline layers |\n|---|---|---|---|---|---|---|---|---|---|")
    rows = []
    for r in rounds:
        sa = r["strata_disk"] - r["strata_disk_before"]
        ba = r["baseline_disk"] - r["baseline_disk_before"]
        sc, bc = r["strata_counts"], r["baseline_counts"]
        rows.append([r["n"], r["strata_disk"], sa, r["baseline_disk"], ba, sc["images"] + sc["runtimes"], sc["layers"], bc["images"], bc["layers"]])
        md.append(f"| {r['n']} | {fmt_bytes(r['strata_disk'])} | {fmt_bytes(sa)} | {fmt_bytes(r['baseline_disk'])} | {fmt_bytes(ba)} | {ratio(ba, sa)} | {sc['images']} + {sc['runtimes']} | {sc['layers']} | {bc['images']} | {bc['layers']} |")
        worse(f"disk added at N={r['n']}", sa, ba, fmt_bytes)
    write_csv(out / "disk.csv", ["n", "strata_total_bytes", "strata_added_bytes", "baseline_total_bytes", "baseline_added_bytes", "strata_images_and_runtimes", "strata_layers", "baseline_images", "baseline_layers"], rows)
    fetch = []  # bytes a node without them receives for the round's N functions
    for r in rounds:
        codes = [d.get("code_bytes") or 0 for d in r["strata_deploy"]]
        fetch.append((sum(codes), r["baseline_counts"].get("function_image_bytes") or 0))
    write_csv(out / "disk_fetch.csv", ["n", "strata_code_bytes", "baseline_function_image_bytes"],
              [[n, a, b] for n, (a, b) in zip(ns, fetch)])
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9.6, 4.0), dpi=110)
    ax1.plot(ns, [x[2] / (1 << 20) for x in rows], "-o", color=COLORS[STRATA], label=STRATA)
    ax1.plot(ns, [x[4] / (1 << 20) for x in rows], "-o", color=COLORS[BASE], label=BASE)
    ax1.set_title("Disk added on this machine (shared layer cache)")
    ax1.set_ylabel("MiB")
    ax2.plot(ns, [max(a, 1) for a, _ in fetch], "-o", color=COLORS[STRATA], label=f"{STRATA}: code")
    ax2.plot(ns, [max(b, 1) for _, b in fetch], "-o", color=COLORS[BASE], label=f"{BASE}: images")
    ax2.set_yscale("log")
    ax2.set_title("Shipped per deploy of N functions: images vs code")
    ax2.set_ylabel("bytes (log)")
    for ax in (ax1, ax2):
        ax.set_xticks(ns)
        ax.set_xticklabels([str(x) for x in ns])
        ax.set_xlabel("functions (N)")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "disk.png")
    plt.close(fig)
    md.append(
        "\nBoth totals include the runtimes (Strata: the imported base image, python3, nodejs and "
        "the packages; baseline: the imported base, the two runtime bases and the dependency "
        "layers). Strata adds no image and no layer per function: a function is its code, "
        "stored content-addressed. The baseline adds one image and at least one layer per "
        "function, plus each running container's writable layer.\n")
    md.append(
        "The baseline's small \"added\" figure is its best case: all images were built on this "
        "machine from one warm layer cache, so they share the base and dependency layers. A node "
        "that does not have a function's image pulls it whole — the figure below — while a Strata "
        "node that has the runtime receives only the function's code. (A baseline node that has the "
        "runtime base cached still pulls each image's dependency and code layers; the dependency "
        "layers are tens of MiB for numpy and Pillow.)\n")
    md.append("| N | baseline function image, median size | baseline function images, sum | Strata code per function, median |\n|---|---|---|---|")
    for r in rounds:
        bc = r["baseline_counts"]
        k = bc.get("function_images") or 0
        codes = [d.get("code_bytes") for d in r["strata_deploy"] if d.get("code_bytes") is not None]
        md.append(f"| {r['n']} | {fmt_bytes(bc.get('function_image_bytes', 0) // k if k else None)} | {fmt_bytes(bc.get('function_image_bytes'))} | {fmt_bytes(med(codes))} |")
    md.append("")

    # ---- cold
    cold = results.get("cold", {})
    if cold:
        md.append("## Cold starts\n")
        md.append("![cold](benchmarks/cold.png)\n")
        md.append(f"Per workload, {meta['cold_runs']} cold starts of each kind. Strata: the first invocation of a "
                  "freshly deployed function, with the runtime's generic pool warm (pool hit) or set to "
                  "min 0 max 0 (pool miss: sandbox, runtime and handler started from nothing); the kind is read "
                  "from the server's `strata_cold_starts_total` counters and only matching samples count. "
                  "Baseline: `podman run -d` of the built image until the function answers. "
                  "A pool hit saves the sandbox and interpreter start, not the handler's own imports "
                  "(numpy, Pillow), which happen when the instance is specialized — hence numpy's "
                  "dearer pool hit.\n")
        md.append("| workload | Strata hit p50 | hit p99 | Strata miss p50 | miss p99 | baseline p50 | baseline p99 | baseline ÷ hit (p50) | baseline ÷ miss (p50) |\n|---|---|---|---|---|---|---|---|---|")
        rows = []
        for w, c in cold.items():
            h, mi, b = c["strata_pool_hit"]["summary"], c["strata_pool_miss"]["summary"], c["baseline"]["summary"]
            rows.append([w, h["p50"], h["p99"], h["n"], mi["p50"], mi["p99"], mi["n"], b["p50"], b["p99"], b["n"]])
            md.append(f"| {w} | {fmt_ms(h['p50'])} | {fmt_ms(h['p99'])} | {fmt_ms(mi['p50'])} | {fmt_ms(mi['p99'])} | {fmt_ms(b['p50'])} | {fmt_ms(b['p99'])} | {ratio(b['p50'], h['p50'])} | {ratio(b['p50'], mi['p50'])} |")
            worse(f"cold start p50 (pool miss), {w}", mi["p50"], b["p50"], fmt_ms)
            worse(f"cold start p99 (pool miss), {w}", mi["p99"], b["p99"], fmt_ms)
            worse(f"cold start p50 (pool hit), {w}", h["p50"], b["p50"], fmt_ms)
        write_csv(out / "cold.csv", ["workload", "strata_hit_p50_ms", "strata_hit_p99_ms", "strata_hit_n", "strata_miss_p50_ms", "strata_miss_p99_ms", "strata_miss_n", "baseline_p50_ms", "baseline_p99_ms", "baseline_n"], rows)
        bars(out / "cold.png", "Cold start → first answer, p50", "ms (log)", [r[0] for r in rows],
             {"Strata pool hit": [r[1] for r in rows], "Strata pool miss": [r[4] for r in rows], BASE: [r[7] for r in rows]}, logy=True)
        md.append("")

    # ---- warm
    md.append("## Warm invocations\n")
    md.append("![warm](benchmarks/warm.png)\n")
    md.append("| N | clients | Strata requests | Strata p50 | Strata p99 | Strata req/s | baseline requests | baseline p50 | baseline p99 | baseline req/s | Strata ÷ baseline (req/s) |\n|---|---|---|---|---|---|---|---|---|---|---|")
    rows = []
    for r in rounds:
        sw, bw = r["strata_warm"], r["baseline_warm"]
        rows.append([r["n"], sw["clients"], sw["latency_ms"]["p50"], sw["latency_ms"]["p99"], sw["rps"], bw["latency_ms"]["p50"], bw["latency_ms"]["p99"], bw["rps"], sw["errors"], bw["errors"]])
        md.append(f"| {r['n']} | {sw['clients']} | {sw['requests']} ({sw['errors']} errors) | {fmt_ms(sw['latency_ms']['p50'])} | {fmt_ms(sw['latency_ms']['p99'])} | {sw['rps']:.0f} | {bw['requests']} ({bw['errors']} errors) | {fmt_ms(bw['latency_ms']['p50'])} | {fmt_ms(bw['latency_ms']['p99'])} | {bw['rps']:.0f} | {ratio(sw['rps'], bw['rps'])} |")
        worse(f"warm latency p50 at N={r['n']}", sw["latency_ms"]["p50"], bw["latency_ms"]["p50"], fmt_ms)
        worse(f"warm latency p99 at N={r['n']}", sw["latency_ms"]["p99"], bw["latency_ms"]["p99"], fmt_ms)
        if sw["rps"] < bw["rps"]:
            slower.append(f"warm throughput at N={r['n']}: Strata {sw['rps']:.0f} req/s, baseline {bw['rps']:.0f} req/s")
    if rounds and rounds[-1]["strata_warm"].get("by_workload"):
        lr = rounds[-1]
        md.append(f"\nBy workload at N = {lr['n']} (p50 / p99):\n")
        md.append("| workload | Strata | baseline |\n|---|---|---|")
        for w in lr["workloads"]:
            a = lr["strata_warm"]["by_workload"].get(w)
            b = lr["baseline_warm"]["by_workload"].get(w)
            if a or b:
                md.append(f"| {w} | {fmt_ms(a and a['p50'])} / {fmt_ms(a and a['p99'])} | {fmt_ms(b and b['p50'])} / {fmt_ms(b and b['p99'])} |")
        md.append("")
    write_csv(out / "warm.csv", ["n", "clients", "strata_p50_ms", "strata_p99_ms", "strata_rps", "baseline_p50_ms", "baseline_p99_ms", "baseline_rps", "strata_errors", "baseline_errors"], rows)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9.6, 4.0), dpi=110)
    for label, i50, i99, irps, color in ((STRATA, 2, 3, 4, COLORS[STRATA]), (BASE, 5, 6, 7, COLORS[BASE])):
        ax1.plot(ns, [x[i50] for x in rows], "-o", color=color, label=f"{label} p50")
        ax1.plot(ns, [x[i99] for x in rows], "--o", color=color, label=f"{label} p99")
        ax2.plot(ns, [x[irps] for x in rows], "-o", color=color, label=label)
    for ax in (ax1, ax2):
        ax.set_xticks(ns)
        ax.set_xticklabels([str(x) for x in ns])
    ax1.set_title("Warm latency")
    ax1.set_xlabel("functions (N)")
    ax1.set_ylabel("ms")
    ax1.grid(True, alpha=0.3)
    ax1.legend(fontsize=7)
    ax2.set_title("Warm throughput")
    ax2.set_xlabel("functions (N)")
    ax2.set_ylabel("requests/s")
    ax2.grid(True, alpha=0.3)
    ax2.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "warm.png")
    plt.close(fig)
    md.append("")

    # ---- memory
    md.append("## Memory per idle warm instance\n")
    md.append("![memory](benchmarks/memory.png)\n")
    md.append("| N | workload | Strata instances | Strata PSS median | baseline instances | baseline PSS median | baseline ÷ Strata |\n|---|---|---|---|---|---|---|")
    rows = []
    for r in rounds:
        for w in r["workloads"]:
            s = [x["pss"] for x in r["strata_memory"] if x["workload"] == w]
            b = [x["pss"] for x in r["baseline_memory"] if x["workload"] == w]
            if not s and not b:
                continue
            rows.append([r["n"], w, len(s), med(s), len(b), med(b)])
            md.append(f"| {r['n']} | {w} | {len(s)} | {fmt_bytes(med(s))} | {len(b)} | {fmt_bytes(med(b))} | {ratio(med(b), med(s))} |")
            worse(f"memory per idle instance, {w} at N={r['n']}", med(s), med(b), fmt_bytes)
    write_csv(out / "memory.csv", ["n", "workload", "strata_instances", "strata_pss_median_bytes", "baseline_instances", "baseline_pss_median_bytes"], rows)
    if rounds:
        lastn = rounds[-1]["n"]
        lr = [x for x in rows if x[0] == lastn]
        bars(out / "memory.png", f"PSS per idle warm instance (N = {lastn})", "MiB", [x[1] for x in lr],
             {STRATA: [(x[3] or 0) / (1 << 20) for x in lr], BASE: [(x[5] or 0) / (1 << 20) for x in lr]})
    md.append(
        "\nA Strata instance runs `strata-init` (the agent, PID 1) next to the language's "
        "bootstrap; the baseline's container runs only the language's HTTP entry point. Both "
        "share the runtime's files through overlay lower layers, so shared pages are split "
        "among instances by PSS.\n")

    # ---- upgrade
    ups = [(r["n"], r["upgrade"]) for r in rounds if r.get("upgrade")]
    md.append("## Runtime upgrade\n")
    if ups:
        md.append("![upgrade](benchmarks/upgrade.png)\n")
        md.append("| N | affected functions | package added | Strata: package build | runtime update | functions answering | Strata total | baseline: builds | baseline total | baseline ÷ Strata |\n|---|---|---|---|---|---|---|---|---|---|")
        rows = []
        for n, u in ups:
            st, bt = u["strata"], u["baseline"]
            rows.append([n, u["functions"], u["package"], st["package_s"], st["update_s"], st["functions_s"], st["total_s"], bt["build_s"], bt["total_s"]])
            md.append(f"| {n} | {u['functions']} | `{u['package']}` | {fmt_s(st['package_s'])} | {fmt_s(st['update_s'])} | {fmt_s(st['functions_s'])} | {fmt_s(st['total_s'])} | {fmt_s(bt['build_s'])} | {fmt_s(bt['total_s'])} | {ratio(bt['total_s'], st['total_s'])} |")
            worse(f"upgrade at N={n}", st["total_s"], bt["total_s"], fmt_s)
        write_csv(out / "upgrade.csv", ["n", "affected", "package", "strata_package_s", "strata_update_s", "strata_functions_s", "strata_total_s", "baseline_build_s", "baseline_total_s"], rows)
        chart(out / "upgrade.png", "Upgrade: add a package to every numpy function", "affected functions", "s",
              {STRATA: ([x[1] for x in rows], [x[6] for x in rows]), BASE: ([x[1] for x in rows], [x[8] for x in rows])})
        md.append(
            "\nStrata builds the package once (an apt install in a build container — most of its "
            "time) and makes a new runtime version from stored layers; affected functions move on "
            "their next invocation. The baseline repeats a build and a container replacement per "
            "affected function, so its time grows with their number.\n")
    else:
        md.append("No round had a numpy function (N ≥ 4 needed).\n")

    # ---- slower
    md.append("## Where Strata is slower\n")
    if slower:
        md.append("Figures of this run where Strata's value is worse than the baseline's:\n")
        md.extend(f"- {s}" for s in slower)
    else:
        md.append("In this run, no figure above is worse for Strata than for the baseline.")
    why = {
        "warm": "- **Warm invocations.** A Strata invocation passes through the server's HTTP API "
        "(token check, routing, metrics) and the instance's agent (`strata-init`, over a unix "
        "socket, then the Lambda Runtime API to the bootstrap); the baseline's requests go "
        "straight to the container's port with nothing in front. That extra hop is the gap in "
        "warm latency and throughput; it weighs least where the handler's own work dominates "
        "(JSON transform, thumbnail). A real image-per-function platform also puts a gateway in "
        "front of its containers, which this baseline leaves out.",
        "memory": "- **Memory.** A Strata instance holds `strata-init` (PID 1, the agent) besides "
        "the language's bootstrap, and each side's entry point differs (Strata's Lambda "
        "bootstraps, the baseline's small HTTP servers): the sum comes out below the baseline "
        "for Python and about even, within a few MiB either way, for Node.js.",
        "disk": "- **Disk at small N.** Strata's first function on a runtime starts that runtime's "
        "generic pool (a writable layer) and grows the metadata database, which at small N can "
        "outweigh one image's code layer on a warm build cache.",
        "cold": "- **Cold starts from nothing.** A pool miss starts a sandbox, the agent and the "
        "interpreter — the same work as `podman run` — so a miss can be as slow as the "
        "baseline, more so on a loaded machine; pool hits are what make Strata's cold starts "
        "fast.",
        "deploy": "- **Deploy.** Strata's deploy includes the first invocation, which is a pool "
        "miss for a runtime's first function.",
        "upgrade": "- **Upgrade.** Strata's upgrade is dominated by building the package once; "
        "with few affected functions that can exceed the baseline's rebuilds on a warm cache.",
    }
    reasons = [text for key, text in why.items() if any(x.startswith(key) for x in slower)]
    if reasons:
        md.append("\nWhat is behind them:\n")
        md.extend(reasons)
        md.append("")
    md.append(
        "Strata's one-time preparation (building a package, composing a runtime) is of the same "
        "order as the baseline's first image build with the same dependency; it is the "
        "per-function and per-upgrade work that Strata removes.\n")

    md.append("## Raw figures\n")
    md.append("`docs/benchmarks/results.json` holds every sample; each chart's data is the CSV of the same name. "
              "Run it again with `scripts/bench --scenario compare [--quick]` (README, Benchmarks).\n")
    report.write_text("\n".join(md) + "\n")


if __name__ == "__main__":
    # Re-render from a results.json: report.py RESULTS OUT_DIR REPORT
    res = json.loads(Path(sys.argv[1]).read_text())
    write(res, Path(sys.argv[2]), Path(sys.argv[3]))

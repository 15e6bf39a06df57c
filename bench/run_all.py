"""Run every benchmark with one command; write a Markdown summary, JSON and a plot.

Each benchmark runs as its own process (what one leaves, another does not inherit; the
ansible one is read only through its JSON), with its results directed to --results.
Then, from their JSON files:
  summary.json      every benchmark's data, return code, duration, load; the headline rows
  summary.md        the headline table, then each benchmark's own tables as it printed them
  README-table.md   the headline table and the command, to paste into the README
  summary.png       start latency and idle memory per pod against the peers (and scale)
Usage: python bench/run_all.py [--quick] [--pods N] [--on-disk M] [--runs R] [--no-peers]
                               [--only a,b] [--skip a,b] [--results DIR] [--workdir DIR]
       python bench/run_all.py --render-only [--results DIR]   (the report again, from its JSON)
--quick is the harness's smoke run (3 pods, 20 on disk, 2 runs, tiny images, no peers):
it proves the machinery, not the figures.
Exit status: 0 when every benchmark ran and the plot was drawn; 1 otherwise.
"""
import argparse
import json
import os
import platform
import subprocess
import sys
import time

import common  # first: the checkout importable (bench/common.py)

HERE = os.path.dirname(os.path.abspath(__file__))
ORDER = ("start", "memory", "scale", "prepare", "import", "ansible", "collections", "stop", "registry", "remote")  # the latency-sensitive first
DASH = "—"


def bench_args(name, a):
    """The command line of one benchmark for these run_all options."""
    quick, peers = a.quick, not (a.no_peers or a.quick)
    out = []
    if name == "start":
        out += ["--runs", str(a.runs or (2 if quick else 20))]
        if quick:
            out.append("--no-profile")
        if not peers:
            out.append("--no-peers")
    elif name == "memory":
        out += ["--pods", "1,%d" % (a.pods or 3), "--restart-policy", "no"] if quick else []
        if not peers:
            out.append("--no-podman")
    elif name == "scale":
        out += ["--pods", str(a.pods or (3 if quick else 100)), "--on-disk", str(a.on_disk or (20 if quick else 1000))]
        if quick:
            out += ["--module-runs", "1"]
        if not peers:
            out.append("--no-podman")
    elif name == "prepare":
        out += ["--runs", str(a.runs or (2 if quick else 20))] + (["--large-mib", "16"] if quick else [])
    elif name == "import":
        # A smoke run must not drop the page cache of a machine others are using.
        out += ["--runs", "1", "--large-mib", "4", "--small-files", "200", "--keep-cache"] if quick else []
    elif name == "ansible":
        out += ["--runs", "1", "--tasks", "2"] if quick else []
    elif name == "registry":
        out += (["--runs", "1", "--layer-kib", "256", "--tasks", "2"] if quick else []) + ([] if peers else ["--no-peers"])
    elif name == "remote":
        out += ["--runs", "1", "--tasks", "2"] if quick else []
    elif name == "stop":
        out += ["--pods", str(a.pods or (3 if quick else 100))] + ([] if peers else ["--no-podman"])
    elif name == "collections":
        out += ["--quick"] if quick else ([] if peers else ["--no-peers"])
        if a.no_install:
            out.append("--no-install")
    if a.no_install and name == "start" and peers:
        out.append("--no-install")
    if a.workdir and name != "ansible":  # ansible_bench takes TMPDIR
        out += ["--workdir", a.workdir]
    return out


def run_one(name, a):
    """Run bench/<name>_bench.py; (record, its output)."""
    path = os.path.join(a.results, name + ".json")
    try:
        os.unlink(path)  # a failed run must not show an older run's figures
    except FileNotFoundError:
        pass
    cmd = [sys.executable, os.path.join(HERE, name + "_bench.py")] + bench_args(name, a)
    env = dict(os.environ, ROCKET_BENCH_RESULTS=a.results, PYTHONUNBUFFERED="1")
    if a.workdir:
        env["TMPDIR"] = a.workdir
    print("\n==> %s" % " ".join(cmd[1:]), flush=True)
    load = os.getloadavg()
    t0 = time.perf_counter()
    lines = []
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        for raw in p.stdout:
            line = raw.decode("utf-8", "replace")
            lines.append(line)
            sys.stdout.write(line)
            sys.stdout.flush()
    finally:
        rc = p.wait()
    rec = {"command": " ".join([os.path.relpath(cmd[1], common.ROOT)] + cmd[2:]), "returncode": rc,
           "seconds": round(time.perf_counter() - t0, 1), "loadavg_before": [round(x, 2) for x in load],
           "loadavg_after": [round(x, 2) for x in os.getloadavg()]}
    try:
        with open(path) as f:
            rec["data"] = json.load(f)
    except (OSError, ValueError) as e:
        rec["data"] = None
        rec["error"] = "no results (%s)" % (e.strerror if isinstance(e, OSError) else e)
    if rc != 0:
        tail = [ln.strip() for ln in lines if ln.strip()][-3:]
        rec["error"] = "exit %d: %s" % (rc, " / ".join(tail))
    rec["ok"] = rc == 0 and rec["data"] is not None
    return rec, "".join(lines)


# -- headline rows: (what, ours, baselines, ratio, goal) ------------------------------------
def _rows(benches, name):
    b = benches.get(name) or {}
    return ((b.get("data") or {}).get("rows")) or []


def _failed(benches, name, what):
    b = benches.get(name)
    if b is None:
        return []
    return [[what, DASH, DASH, DASH, "not measured: %s" % (b.get("error") or "no figures")]]


def head_start(benches):
    rows = {r["name"]: r for r in _rows(benches, "start")}
    ours = rows.get("ours") or {}
    if "median_ms" not in ours:
        return _failed(benches, "start", "start a prepared `/bin/true` pod, `net: none`")
    label = {"floor": "floor", "runc": "runc", "crun": "crun", "nspawn": "nspawn", "podman": "podman"}
    base = ", ".join("%s %s" % (label[k], rows[k]["median_ms"]) for k in label if "median_ms" in rows.get(k, {}))
    if ours.get("vs_runc"):
        ratio, goal = "%sx runc" % ours["vs_runc"], "≤ 1.2x runc: %s" % ("met" if ours["vs_runc"] <= 1.2 else "not yet")
    else:
        ratio, goal = "%sx floor" % ours.get("vs_floor", DASH), "≤ 1.2x runc: runc not measured"
    if ours.get("cpu_vs_runc"):  # CPU time beside wall time (start_bench's rows)
        ratio += " (CPU %sx)" % ours["cpu_vs_runc"]
    return [["start a prepared `/bin/true` pod, `net: none`", "%s ms" % ours["median_ms"], base + " ms", ratio, goal]]


def head_memory(benches):
    res = _rows(benches, "memory")
    ours = [r for r in res if "flags" not in r]
    pod = [r for r in res if "flags" in r]
    if not ours:
        return _failed(benches, "memory", "idle memory per pod (PSS)")
    o = max(ours, key=lambda r: r["pods"])
    v = o["per_pod"]["runtime"]["Pss"]
    base = DASH
    if pod:
        p = max(pod, key=lambda r: r["pods"])
        base = "podman/conmon %s MiB at %d" % (p["per_pod"]["runtime"]["Pss"], p["pods"])
    policy = ", restart %s" % o["restart_policy"] if o.get("restart_policy") else ""
    return [["idle memory per pod at %d pods (PSS%s)" % (o["pods"], policy), "%s MiB" % v, base, "",
             "≤ 4 MiB: %s" % ("met" if v <= 4 else "not yet")]]


def head_scale(benches):
    rs = _rows(benches, "scale")
    if not rs or not rs[0].get("ok"):
        return _failed(benches, "scale", "scale")
    r = rs[0]
    n, m = r["pods"], r["on_disk"]
    out = []
    ps = r.get("podman_start_all_s")
    out.append(["start %d detached pods, one command each" % n,
                "%s s (+ %s s prepare)" % (r["ours_start_all_s"], r["ours_prepare_all_s"]),
                "%d `podman run -d` %s s" % (n, ps) if ps else "podman: %s" % r.get("podman_error", DASH),
                "%.2fx podman (%.2fx with prepare)" % (r["ours_start_all_s"] / ps, (r["ours_start_all_s"] + r["ours_prepare_all_s"]) / ps) if ps else "",
                ""])
    om = r["ours_memory"]["per_pod"]["runtime"]["Pss"]
    pm = ((r.get("podman_memory") or {}).get("per_pod") or {}).get("runtime", {}).get("Pss")
    out.append(["idle memory per pod at %d pods (PSS)" % n, "%s MiB" % om,
                "podman/conmon %s MiB" % pm if pm is not None else DASH, "", ""])
    out.append(["`pod_info` over %d pods (ad-hoc module call)" % (n + m), "%s s" % r["pod_info_module_s"],
                "`ping` %s s; library listing %s ms" % (r["ping_module_s"], r["list_describe_ms"]),
                "%.2fx ping" % (r["pod_info_module_s"] / r["ping_module_s"]), ""])
    out.append(["stop %d running pods, then gc all %d" % (n, n + m), "%s s + %s s" % (r["ours_stop_all_s"], r["ours_gc_all_s"]),
                "`podman rm -f -t 0` of %d: %s s" % (n, r["podman_rm_all_s"]) if "podman_rm_all_s" in r else DASH, "", ""])
    return out


def head_prepare(benches):
    rows = _rows(benches, "prepare")
    if len(rows) != 2:
        return _failed(benches, "prepare", "prepare, large vs small image")
    small, large = rows
    return [["prepare a pod, %s vs %s" % (large["image"].split(" (")[0], small["image"].split(" (")[0]),
             "%s ms" % large["median_ms"], "%s ms" % small["median_ms"], "%s" % large["vs_small"],
             "≤ 1.2: %s" % ("met" if large["vs_small"] <= 1.2 else "not yet")]]


def head_import(benches):
    rows = _rows(benches, "import")
    if not rows:
        return _failed(benches, "import", "import + render")
    return [["import + render, %s" % r["image"], "%s s" % r["ours_s"], "`tar -xzf` + sync %s s" % r["tar_sync_s"],
             "%sx tar" % r["ours_vs_tar"], "≤ 1x tar: %s" % ("met" if r["ours_vs_tar"] <= 1 else "not yet")]
            for r in rows]


def head_ansible(benches):
    """Each of our rows against the ping row of the same kind of cost."""
    rows = _rows(benches, "ansible")
    if not any("ping" in r.get("task", "") for r in rows):
        return _failed(benches, "ansible", "a no-op `pod_run` task")

    def kind(task):  # per task, marginal or first task: each of ours against ping's of its kind
        return "first" if "first task" in task else "marginal" if "marginal" in task else "per task"

    out, pings, first_ping = [], {}, None
    for r in rows:
        if "per_task_ms" not in r:
            continue
        if r["task"].startswith("ansible.builtin.ping"):
            pings[kind(r["task"])] = r
            if "first task" in r["task"]:
                first_ping = r
            continue
        if "role" in r["task"]:
            one = r.get("ratio_to_one_ping_playbook")
            out.append([r["task"], "%s ms" % r["per_task_ms"], "a playbook of one `ping` task%s"
                        % (" %s ms" % first_ping["per_task_ms"] if first_ping else ""),
                        "%sx" % one if one is not None else "",
                        ("≤ 1.5x: %s" % ("met" if one <= 1.5 else "not yet")) if one is not None else ""])
            continue
        ratio = r.get("ratio")
        out.append([r["task"], "%s ms" % r["per_task_ms"], "`ping` %s ms" % pings.get(kind(r["task"]), {}).get("per_task_ms"),
                    "%sx ping" % ratio if ratio is not None else "",
                    ("≤ 1.2x ping: %s" % ("met" if ratio <= 1.2 else "not yet")) if ratio is not None else ""])
    return out


def head_registry(benches):
    rows = _rows(benches, "registry")
    if len(rows) != 3:
        return _failed(benches, "registry", "cold pull of a 10-layer image")
    cold, again, shared = rows
    out = []
    ratio = cold.get("ours_vs_podman")
    out.append(["cold pull, 10 layers (%s MiB), flattened and rendered" % cold["compressed_mib"], "%s s" % cold["ours_s"],
                "`podman pull` %s, `skopeo copy dir:` %s s"
                % ("%s s" % cold["podman_s"] if cold.get("podman_s") else "skipped", cold["skopeo_dir_s"]),
                "%sx podman" % ratio if ratio is not None else "",
                ("≤ 1x podman: %s" % ("met" if ratio <= 1 else "not yet")) if ratio is not None else ""])
    out.append(["re-pull of an unchanged tag (`cas_image` pull=always, %s request)" % again["requests_per_task"],
                "%s ms" % again["per_task_ms"], "`ping` %s ms" % again["ping_per_task_ms"],
                "%sx ping" % again["ratio_to_ping"],
                "≤ 1.2x ping: %s" % ("met" if again["ratio_to_ping"] <= 1.2 else "not yet")])
    out.append(["second image sharing 9 of 10 layers", "%d of %d layers, %s MiB downloaded"
                % (shared["layers_downloaded"], shared["layers_total"], shared["mib_downloaded"]),
                "%s MiB reused" % shared["mib_reused"], "", "only the new layer: %s"
                % ("met" if shared["layers_downloaded"] == 1 else "not yet")])
    return out


def head_remote(benches):
    rows = _rows(benches, "remote")
    if not rows or "ratio" not in rows[0]:
        return _failed(benches, "remote", "a `command` task inside a pod on a remote host")
    r = rows[0]
    return [["a `command` task inside a pod on a remote host (pipelined)", "%s ms" % r["pod_task_ms"],
             "plain ssh to that host %s ms" % r["ssh_task_ms"], "%sx ssh" % r["ratio"],
             "≤ %sx ssh: %s" % (r["goal_ratio"], "met" if r["ratio"] <= r["goal_ratio"] else "not yet")]]


def head_stop(benches):
    rows = _rows(benches, "stop")
    if not rows or "remove_pod_set_s" not in rows[0]:
        return _failed(benches, "stop", "stop and remove running pods")
    r = rows[0]
    n = r["pods"]
    base = "`podman rm -f -t 0` of %d: %s" % (n, "%s s" % r["podman_rm_s"] if "podman_rm_s" in r else r.get("podman_error"))
    out = []
    for what, key, vs in (("stop and remove %d running pods, one `pod_set` run" % n, "remove_pod_set_s", "pod_set_vs_podman"),
                          ("stop and remove %d running pods, %d `pod_run state=absent` tasks" % (n, n),
                           "remove_pod_run_loop_s", "pod_run_loop_vs_podman")):
        ratio = r.get(vs)
        out.append([what, "%s s" % r[key], base, "%sx podman" % ratio if ratio is not None else "",
                    ("≤ 1.0x podman: %s" % ("met" if ratio <= 1.0 else "not yet")) if ratio is not None else ""])
    return out


def head_collections(benches):
    """The issue's goal rows of the Ansible-level comparison (bench/collections_bench.py)."""
    data = (benches.get("collections") or {}).get("data") or {}
    by = {r["key"]: r for r in data.get("rows") or [] if "error" not in r}
    if "rocket_loop" not in by or "ping_loop" not in by:
        return _failed(benches, "collections", "a no-op `pod_run` task vs `containers.podman.podman_container`")
    n = data["meta"]["count"]
    ours, batch, ping = by["rocket_loop"], by["rocket_batch"], by["ping_loop"]
    pl, pb, dl = by.get("podman_loop"), by.get("podman_batch"), by.get("docker_loop")
    errs = [r["error"] for r in data["rows"] if "error" in r]
    missing = "peers not measured: %s" % ("; ".join(errs) if errs else "--no-peers")

    def goal(ratio, limit):
        return "≤ %sx: %s" % (limit, "met" if ratio <= limit else "not yet")

    out = []
    if pl:
        r = ours["noop_per_container_ms"] / pl["noop_per_container_ms"]
        out.append(["a no-op `pod_run` task (loop of %d)" % n, "%s ms" % ours["noop_per_container_ms"],
                    "`podman_container` %s ms" % pl["noop_per_container_ms"], "%.2fx podman" % r, goal(r, 0.5)])
    else:
        out.append(["a no-op `pod_run` task (loop of %d)" % n, "%s ms" % ours["noop_per_container_ms"],
                    "`ping` %s ms" % ping["noop_per_container_ms"], "", missing])
    if dl:
        o = ours["noop_per_container_ms"] - ping["noop_per_container_ms"]
        d = dl["noop_per_container_ms"] - ping["noop_per_container_ms"]
        out.append(["the same, cost above a `ping` task", "%.1f ms" % o if o >= 0 else "%.1f ms (below `ping`)" % o,
                    "`docker_container` %.1f ms above `ping` (%s ms)" % (d, ping["noop_per_container_ms"]),
                    "%.2fx docker" % (o / d) if d > 0 else "", goal(o / d, 0.5) if d > 0 else "docker at or below ping"])
    for phase, what, limit in (("noop", "`pod_set` of %d running pods, nothing to do" % n, 0.1),
                               ("create", "create %d pods through `pod_set`" % n, 0.3),
                               ("remove", "remove %d running pods through `pod_set`" % n, None)):
        if not pl:
            out.append([what, "%s s" % batch[phase + "_s"], "", "", missing])
            continue
        r = batch[phase + "_s"] / pl[phase + "_s"]
        base = "`podman_container` loop %s s" % pl[phase + "_s"]
        if pb:
            base += ", `podman_containers` %s s" % pb[phase + "_s"]
        if dl:
            base += ", `docker_container` loop %s s" % dl[phase + "_s"]
        out.append([what, "%s s" % batch[phase + "_s"], base, "%.3fx podman loop" % r,
                    goal(r, limit) if limit else ""])
    return out


HEADS = {"import": head_import, "start": head_start, "memory": head_memory, "scale": head_scale,
         "prepare": head_prepare, "ansible": head_ansible, "registry": head_registry, "remote": head_remote,
         "collections": head_collections, "stop": head_stop}
README_ORDER = ("collections", "import", "start", "memory", "scale", "stop", "prepare", "ansible", "registry", "remote")


def headline(benches):
    rows = []
    for name in README_ORDER:
        if name in benches:
            rows += HEADS[name](benches)
    return rows


# -- plot -----------------------------------------------------------------------------------
def plot(benches, path, title):
    """Start latency, idle memory per pod and (when measured) scale, against the peers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.6))
    ax = axes[0]
    rows = [r for r in _rows(benches, "start") if "median_ms" in r]
    order = ["floor", "runc", "crun", "nspawn", "podman", "ours"]
    rows.sort(key=lambda r: order.index(r["name"]) if r["name"] in order else 99)
    if rows:
        names = [r["name"] for r in rows]
        vals = [r["median_ms"] for r in rows]
        bars = ax.barh(names, vals, color=["#c0392b" if n == "ours" else "#7f8c8d" for n in names])
        ax.bar_label(bars, labels=["%g" % v for v in vals], padding=3, fontsize=8)
        ax.invert_yaxis()
        ax.set_xlim(0, max(vals) * 1.2)
    _empty(ax, rows, benches.get("start"))
    ax.set_title("start a /bin/true container (median ms)")
    ax.set_xlabel("ms, cold whole command")

    ax = axes[1]
    labels, runtime, app = [], [], []
    for r in _rows(benches, "memory"):
        who = "podman" if "flags" in r else "ours"
        labels.append("%s @%d%s" % (who, r["pods"], " " + r["restart_policy"] if r.get("restart_policy") else ""))
        runtime.append(r["per_pod"]["runtime"]["Pss"])
        app.append(r["per_pod"]["app"]["Pss"])
    sc = _rows(benches, "scale")
    if sc and sc[0].get("ours_memory"):
        for who, key in (("ours", "ours_memory"), ("podman", "podman_memory")):
            m = sc[0].get(key)
            if m:
                labels.append("%s @%d (scale)" % (who, sc[0]["pods"]))
                runtime.append(m["per_pod"]["runtime"]["Pss"])
                app.append(m["per_pod"]["app"]["Pss"])
    if labels:
        colors = ["#c0392b" if lb.startswith("ours") else "#7f8c8d" for lb in labels]
        ax.barh(labels, runtime, color=colors, label="runtime processes")
        bars = ax.barh(labels, app, left=runtime, color="#f5b7b1", label="the app (sleep)")
        ax.bar_label(bars, labels=["%.1f" % (a + b) for a, b in zip(runtime, app)], padding=3, fontsize=8)
        ax.invert_yaxis()
        ax.set_xlim(0, max(a + b for a, b in zip(runtime, app)) * 1.2)
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2, frameon=False)
    _empty(ax, labels, benches.get("memory"))
    ax.set_title("idle memory per pod (PSS MiB) @ pods running")
    ax.set_xlabel("MiB")

    ax = axes[2]
    bars_l, vals = [], []
    if sc and sc[0].get("ok"):
        r = sc[0]
        bars_l += ["ours: start %d" % r["pods"], "ours: prepare + start"]
        vals += [r["ours_start_all_s"], r["ours_start_all_s"] + r["ours_prepare_all_s"]]
        if r.get("podman_start_all_s"):
            bars_l.append("podman run -d ×%d" % r["pods"])
            vals.append(r["podman_start_all_s"])
        bars_l += ["ours: stop all", "ours: gc all %d" % (r["pods"] + r["on_disk"])]
        vals += [r["ours_stop_all_s"], r["ours_gc_all_s"]]
        if "podman_rm_all_s" in r and r.get("podman_start_all_s"):
            bars_l.append("podman rm -f ×%d" % r["pods"])
            vals.append(r["podman_rm_all_s"])
        b = ax.barh(bars_l, vals, color=["#7f8c8d" if lb.startswith("podman") else "#c0392b" for lb in bars_l])
        ax.bar_label(b, labels=["%.2f" % v for v in vals], padding=3, fontsize=8)
        ax.invert_yaxis()
        ax.set_xlim(0, max(vals) * 1.25)
    _empty(ax, bars_l, benches.get("scale"))
    ax.set_title("scale (seconds)")
    ax.set_xlabel("s")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _empty(ax, data, rec):
    if not data:
        why = (rec or {}).get("error") or "not run"
        ax.text(0.5, 0.5, "not measured:\n" + why[:80], ha="center", va="center", transform=ax.transAxes, fontsize=8)
        ax.set_yticks([])


# -- main -----------------------------------------------------------------------------------
def machine():
    return {"python": sys.version.split()[0], "kernel": os.uname().release, "machine": platform.machine(),
            "cpus": os.cpu_count(), "mem_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)}


def render(results, benches, meta):
    """summary.json, summary.png, README-table.md and summary.md from the benchmarks' records
    (each with its printed output); returns the plot's error or None."""
    names = [n for n in ORDER if n in benches]
    rows = headline(benches)
    left = {n: b["data"]["meta"].get("left_behind") for n, b in benches.items()
            if b.get("data") and (b["data"].get("meta") or {}).get("left_behind")}
    loads = [b["loadavg_before"][0] for b in benches.values()] + [b["loadavg_after"][0] for b in benches.values()]
    peak = max(loads) if loads else None
    quick = " (QUICK: not figures)" if meta["quick"] else ""
    title = "appc.rocket benchmarks, %s, %d CPUs, load %s to %s%s" % (
        meta["started"], meta["cpus"], meta["loadavg_start"][0] if names else DASH, peak, quick)
    plot_error = None
    try:
        plot(benches, os.path.join(results, "summary.png"), title)
    except ImportError as e:
        plot_error = "matplotlib is missing (%s): pip install -r requirements-bench.txt, or use `make bench`" % e
    summary = {"meta": meta, "headline": [dict(zip(("what", "ours", "baselines", "ratio", "goal"), r)) for r in rows],
               "benches": benches, "left_behind": left, "plot": None if plot_error else "summary.png",
               "plot_error": plot_error}
    with open(os.path.join(results, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    tbl = common.table(["what", "ours", "baseline(s), same run", "ratio", "goal"], rows)
    when = "%s on %d CPUs, %s GiB, kernel %s, Python %s; load average %s at the start, up to %s while it ran" % (
        meta["started"], meta["cpus"], meta["mem_gib"], meta["kernel"], meta["python"],
        meta["loadavg_start"][0] if names else DASH, peak)
    readme = ("Latest figures from `make bench` (`%s`), %s. Medians; baselines measured in the same run, "
              "so read the ratios rather than the milliseconds.\n\n%s\n" % (meta["command"], when, tbl))
    with open(os.path.join(results, "README-table.md"), "w") as f:
        f.write(readme)
    md = ["# Benchmarks%s\n" % (" (quick smoke run: sizes too small to mean anything)" if meta["quick"] else ""),
          "`%s`, %s; %.0f s in all.\n" % (meta["command"], when, meta["seconds"]), tbl, "",
          "![start latency and memory against the peers](summary.png)\n" if not plot_error else "plot: %s\n" % plot_error]
    for n in names:
        b = benches[n]
        md.append("\n---\n\n# %s: `%s` (%s s, exit %d, load %s → %s)\n" % (
            n, b["command"], b["seconds"], b["returncode"], b["loadavg_before"][0], b["loadavg_after"][0]))
        if b.get("error"):
            md.append("**%s**\n" % b["error"])
        md.append((b.get("output") or "").strip() + "\n")
    if left:
        md.append("\n**Left behind** (not ours alone when other work runs on this host): `%s`\n" % json.dumps(left))
    with open(os.path.join(results, "summary.md"), "w") as f:
        f.write("\n".join(md))
    print("\n" + tbl)
    print("\nwrote %s/{summary.md,summary.json,README-table.md%s}" % (results, "" if plot_error else ",summary.png"))
    return plot_error


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: tiny sizes, 2 runs, no peers")
    ap.add_argument("--pods", type=int, default=None, help="scale: detached pods (default 100; quick 3)")
    ap.add_argument("--on-disk", type=int, default=None, help="scale: prepared pods listed (default 1000; quick 20)")
    ap.add_argument("--runs", type=int, default=None, help="start and prepare: runs (default 20; quick 2)")
    ap.add_argument("--no-peers", action="store_true", help="skip runc, crun, nspawn and podman")
    ap.add_argument("--no-install", action="store_true", help="do not apt-get install missing peers")
    ap.add_argument("--only", default="", help="comma-separated: " + ",".join(ORDER))
    ap.add_argument("--skip", default="", help="comma-separated benchmarks to leave out")
    ap.add_argument("--results", default=common.RESULTS)
    ap.add_argument("--workdir", default=None, help="where benchmarks make their temporary files")
    ap.add_argument("--render-only", action="store_true",
                    help="run nothing: write the summary, table and plot again from --results/summary.json")
    a = ap.parse_args(argv)
    a.results = os.path.abspath(a.results)
    if a.render_only:
        with open(os.path.join(a.results, "summary.json")) as f:
            old = json.load(f)
        return 1 if render(a.results, old["benches"], old["meta"]) else 0
    only = [x for x in a.only.split(",") if x]
    skip = [x for x in a.skip.split(",") if x]
    for x in only + skip:
        if x not in ORDER:
            ap.error("unknown benchmark %r (known: %s)" % (x, ", ".join(ORDER)))
    names = [n for n in ORDER if (not only or n in only) and n not in skip]
    os.makedirs(a.results, exist_ok=True)
    if a.workdir:
        a.workdir = os.path.abspath(a.workdir)
        os.makedirs(a.workdir, exist_ok=True)
    started = time.time()
    benches = {}
    for n in names:
        benches[n], out = run_one(n, a)
        benches[n]["output"] = out
    cmdline = "python bench/run_all.py" + "".join(" " + x for x in (argv if argv is not None else sys.argv[1:]))
    meta = dict(machine(), started=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(started)),
                seconds=round(time.time() - started, 1), quick=a.quick, command=cmdline,
                loadavg_start=benches[names[0]]["loadavg_before"] if names else None)
    plot_error = render(a.results, benches, meta)
    bad = [n for n in names if not benches[n]["ok"]]
    if bad:
        print("FAILED: %s" % ", ".join("%s (%s)" % (n, benches[n].get("error")) for n in bad))
    if plot_error:
        print("FAILED: %s" % plot_error)
    return 1 if bad or plot_error else 0


if __name__ == "__main__":
    sys.exit(main())

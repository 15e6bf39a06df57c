"""The benchmark harness works: `bench/run_all.py --quick` runs every benchmark with tiny
sizes and writes its summary, JSON, README table and plot, and leaves nothing behind.

Not a timed test: the figures of a quick run mean nothing, only that each benchmark ran,
measured something and cleaned up (pods, mounts, cgroups, keepers, temporary files).
"""
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BENCHES = {"start", "memory", "scale", "prepare", "import", "ansible", "collections", "stop", "registry", "remote"}


def test_run_all_quick(tmp_path):
    results, work = tmp_path / "results", tmp_path / "work"
    p = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "run_all.py"), "--quick", "--no-install",
                        "--results", str(results), "--workdir", str(work)],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=400, check=False)
    assert p.returncode == 0, p.stdout[-4000:]
    s = json.loads((results / "summary.json").read_text())

    assert set(s["benches"]) == BENCHES
    for name, b in s["benches"].items():
        assert b["ok"] and b["returncode"] == 0, (name, b.get("error"))
        assert b["data"]["rows"], name
        assert (results / (name + ".json")).is_file()
    assert s["meta"]["quick"] is True and s["meta"]["cpus"] >= 1

    start = {r["name"]: r for r in s["benches"]["start"]["data"]["rows"]}
    assert start["ours"]["median_ms"] > 0 and start["ours"]["runs"] == 2
    assert start["floor"]["median_ms"] > 0
    assert "skipped" in start["podman"]["error"]

    scale = s["benches"]["scale"]["data"]["rows"][0]
    assert scale["ok"] and scale["pods"] == 3 and scale["on_disk"] == 20
    for k in ("ours_prepare_all_s", "ours_start_all_s", "ours_stop_all_s", "ours_gc_all_s", "on_disk_prepare_all_s",
              "pod_info_module_s", "ping_module_s", "list_pods_ms", "list_describe_ms"):
        assert scale[k] >= 0, k
    assert scale["ours_memory"]["per_pod"]["runtime"]["Pss"] > 0
    assert "skipped" in scale["podman_error"]

    mem = s["benches"]["memory"]["data"]["rows"]
    assert [r["pods"] for r in mem] == [1, 3]
    assert s["benches"]["prepare"]["data"]["rows"][1]["vs_small"] > 0
    assert len(s["benches"]["import"]["data"]["rows"]) == 2
    tasks = [r["task"] for r in s["benches"]["ansible"]["data"]["rows"]]
    assert "ansible.builtin.ping" in tasks and any("pod_run" in t for t in tasks)
    assert any("marginal" in t for t in tasks) and any("first task" in t for t in tasks)

    # The collections comparison, ours alone in a quick run: every phase ran and was checked
    # (create and remove changed something, the no-op nothing), per loop and per pod_set.
    coll = {r["key"]: r for r in s["benches"]["collections"]["data"]["rows"]}
    assert set(coll) == {"ping_loop", "rocket_loop", "rocket_batch"}
    assert s["benches"]["collections"]["data"]["meta"]["count"] == 2
    for key in ("rocket_loop", "rocket_batch"):
        for phase in ("create", "noop", "remove"):
            assert coll[key][phase + "_s"] > 0, (key, phase)
    assert s["benches"]["collections"]["data"]["meta"]["left_behind"] == {}

    stop = s["benches"]["stop"]["data"]["rows"][0]
    assert stop["pods"] == 3 and stop["remove_pod_set_s"] > 0 and stop["remove_pod_run_loop_s"] > 0
    assert "skipped" in stop["podman_error"] and s["benches"]["stop"]["data"]["meta"]["left_behind"] == {}

    head = s["headline"]
    assert head[0]["what"].startswith("a no-op `pod_run` task"), head[0]  # the README shows it first
    assert head and all(set(r) == {"what", "ours", "baselines", "ratio", "goal"} for r in head)
    assert not [r for r in head if r["goal"].startswith("not measured")], head

    png = results / "summary.png"
    assert s["plot"] == "summary.png" and s["plot_error"] is None
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10000
    table = (results / "README-table.md").read_text()
    assert "| what | ours |" in table and "run_all.py --quick" in table
    assert "start a prepared `/bin/true` pod" in (results / "summary.md").read_text()

    # Every benchmark found the host as it left it, and its temporary files are gone.
    assert s["left_behind"] == {}
    assert os.listdir(work) == []

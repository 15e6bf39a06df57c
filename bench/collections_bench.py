"""bench/collections: the same declared state through appc.rocket, containers.podman and
community.docker, on one controller and one host, interleaved.

Users choose between collections, not runtimes: this runs N containers of one busybox
root filesystem (`/bin/sleep 100000`, no network, stop timeout 0) through each collection
and times whole `ansible-playbook` runs of three phases - create, no-op (everything already
as declared), remove - once as a loop of N tasks and, where the collection has one, as one
batch module (appc.rocket.pod_set, containers.podman.podman_containers; community.docker
has none without the compose plugin). An empty playbook and a loop of N `ping` tasks are
measured in the same rounds: per-task cost = (playbook - empty playbook) / N.

Phases run in rounds: create for every variant in a random order, then no-op for every
variant, then remove; R rounds, medians. Each playbook's recap is checked (create and remove
change something, the no-op changes nothing, nothing fails).

The peers run from a benchmark venv of their own with PyPI's `ansible` package (its hundred
collections are never put into the test venv): ROCKET_BENCH_VENV, by default
/var/cache/appc-rocket-test/bench-venv, made from requirements-bench-collections.txt when
missing. podman (Debian's) is configured for this host through a CONTAINERS_CONF of the
benchmark's own (runc, cgroupfs, file events, ulimits); dockerd (Debian's docker.io) is
started by the benchmark with --iptables=false --bridge=none and a data root of its own, and
stopped by its PID afterwards. Images are imported from the tests' busybox root filesystem,
so nothing is pulled.
Usage: python bench/collections_bench.py [--count 20] [--runs 1] [--no-peers] [--no-install]
                                         [--workdir DIR] [--quick]
--no-peers (and --quick, which also means --count 2) measures appc.rocket alone with the
running interpreter's Ansible: it proves the harness.
As root, this collection's host library is laid out as the runtime role installs it
(tests/support/thin_library.py), as podman and docker are installed from Debian's packages:
our tasks then run from it (plugins/plugin_utils/module_action.py).
--no-library leaves it out: a host where only the modules' own payloads run.
"""
import argparse
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import common  # first: the checkout importable (bench/common.py)
import start_bench  # podman's flags for this host

VENV = os.environ.get("ROCKET_BENCH_VENV") or "/var/cache/appc-rocket-test/bench-venv"
REQS = os.path.join(common.ROOT, "requirements-bench-collections.txt")
PACKAGES = ("podman", "runc", "docker.io")
PODMAN_IMAGE = "localhost/rocketbench-busybox:latest"
DOCKER_IMAGE = "rocketbench-busybox:latest"
HEAD = """- hosts: localhost
  gather_facts: false
  tasks:
    - name: warm-up (skipped, so every playbook has a recap line)
      ansible.builtin.debug:
        msg: warm-up
        verbosity: 4
"""
CMD = ["/bin/sleep", "100000"]
# What each phase declares (our state, the peers' state) and whether the recap must show a change.
PHASES = (("create", "running", "started", True), ("noop", "running", "started", False),
          ("remove", "absent", "absent", True))


def yaml_task(module, args, loop=None):
    """One task; the arguments as JSON (valid YAML), with a loop variable in names."""
    body = "    - name: %s\n      %s: %s\n" % (module, module, json.dumps(args))
    if loop:
        body += '      loop: "{{ range(%d) | list }}"\n' % loop
    return body


class Variant:
    """One collection in one form (loop of tasks, or batch module)."""

    def __init__(self, key, label, collection, batch, body):
        self.key, self.label, self.collection, self.batch, self.body = key, label, collection, batch, body
        self.times = {p[0]: [] for p in PHASES}


def rocket_variants(data, n):
    def pod(name, state):
        return {"name": name, "image": "example.com/busybox", "exec": CMD, "net": "none", "stop_timeout": 0,
                "state": state}

    def loop(phase):
        args = dict(pod("rl-{{ item }}", phase[1]), data_dir=data)
        return yaml_task("appc.rocket.pod_run", args, loop=n)

    def batch(phase):
        return yaml_task("appc.rocket.pod_set", {"data_dir": data, "pods": [pod("rs-%d" % i, phase[1]) for i in range(n)]})

    return [Variant("rocket_loop", "appc.rocket.pod_run, loop of %d" % n, "appc.rocket", False, loop),
            Variant("rocket_batch", "appc.rocket.pod_set, one task", "appc.rocket", True, batch)]


def podman_variants(n):
    def ctr(name, state):
        return {"name": name, "image": PODMAN_IMAGE, "command": CMD, "network": "none", "stop_timeout": 0,
                "state": state}

    def loop(phase):
        return yaml_task("containers.podman.podman_container", ctr("pl-{{ item }}", phase[2]), loop=n)

    def batch(phase):
        return yaml_task("containers.podman.podman_containers", {"containers": [ctr("pb-%d" % i, phase[2]) for i in range(n)]})

    return [Variant("podman_loop", "containers.podman.podman_container, loop of %d" % n, "containers.podman", False, loop),
            Variant("podman_batch", "containers.podman.podman_containers, one task", "containers.podman", True, batch)]


def docker_variants(n):
    def loop(phase):
        return yaml_task("community.docker.docker_container", {
            "name": "dl-{{ item }}", "image": DOCKER_IMAGE, "command": CMD, "network_mode": "none", "stop_timeout": 0,
            "state": phase[2]}, loop=n)

    return [Variant("docker_loop", "community.docker.docker_container, loop of %d" % n, "community.docker", False, loop)]


def base_variants(n):
    empty = Variant("empty", "a playbook without tasks", "ansible.builtin", False, lambda phase: "")
    ping = Variant("ping_loop", "ansible.builtin.ping, loop of %d" % n, "ansible.builtin", False,
                   lambda phase: yaml_task("ansible.builtin.ping", {}, loop=n))
    return [empty, ping]


# -- the peers' machinery ------------------------------------------------------------------
def ensure_venv(install):
    """The benchmark venv's bin directory, made when missing; or raise why it cannot be."""
    bindir = os.path.join(VENV, "bin")
    site = subprocess.run([os.path.join(bindir, "python"), "-c",
                           "import ansible_collections.containers.podman, ansible_collections.community.docker, requests"],
                          capture_output=True, check=False) if os.path.exists(os.path.join(bindir, "python")) else None
    if site is not None and site.returncode == 0:
        return bindir
    if not install:
        raise RuntimeError("no benchmark venv with PyPI's ansible at %s (run without --no-install)" % VENV)
    print("making the benchmark venv %s (PyPI's ansible, once)" % VENV, flush=True)
    subprocess.run([sys.executable, "-m", "venv", VENV], check=True)
    subprocess.run([os.path.join(bindir, "pip"), "install", "-q", "-r", REQS], check=True)
    return bindir


def podman_conf(work):
    """A CONTAINERS_CONF with what this host needs (the flags start_bench finds), so the
    podman modules run podman as the host requires without touching /etc."""
    flags, notes = start_bench.podman_flags(None)
    ulimits = [flags[i + 1] for i, f in enumerate(flags) if f == "--ulimit"]
    lines = ["[containers]", "default_ulimits = %s" % json.dumps(ulimits), "[engine]", 'events_logger = "file"']
    if "--cgroup-manager" in flags:
        lines.append('cgroup_manager = "cgroupfs"')
    if "--runtime" in flags:
        lines.append('runtime = "runc"')
    path = os.path.join(work, "containers.conf")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path, notes + ["file events"]


class Dockerd:
    """dockerd with a data root, exec root and socket of its own; stopped by its PID."""

    def __init__(self, work):
        self.root = os.path.join(work, "docker")
        self.exec_root = os.path.join(work, "docker-exec")
        self.sock = os.path.join(work, "docker.sock")
        self.host = "unix://" + self.sock
        self.proc = None
        self.log = os.path.join(work, "dockerd.log")

    def start(self):
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                ["dockerd", "--iptables=false", "--ip-masq=false", "--bridge=none", "--data-root", self.root,
                 "--exec-root", self.exec_root, "--pidfile", os.path.join(self.exec_root, "dockerd.pid"),
                 "--host", self.host, "--exec-opt", "native.cgroupdriver=cgroupfs"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("dockerd exited %s: %s" % (self.proc.returncode, self.tail()))
            if self.docker("version", check=False).returncode == 0:
                return
            time.sleep(0.2)
        raise RuntimeError("dockerd did not answer within 60 s: %s" % self.tail())

    def tail(self):
        try:
            with open(self.log, "rb") as f:
                return f.read().decode("utf-8", "replace").strip()[-400:]
        except OSError:
            return ""

    def docker(self, *args, check=True, stdin=None):
        return subprocess.run(["/usr/bin/docker", "-H", self.host] + list(args), stdin=stdin, capture_output=True,
                              check=check)

    def stop(self):
        """SIGTERM to our dockerd (its containerd goes with it), then SIGKILL after 30 s."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def root_tar(rootfs, work):
    path = os.path.join(work, "busybox-rootfs.tar")
    subprocess.run(["tar", "-C", rootfs, "-cf", path, "."], check=True)
    return path


def containers_named(cmd, prefixes):
    """IDs of containers whose name starts with one of ``prefixes`` (ours, by name)."""
    r = subprocess.run(cmd + ["ps", "-a", "--format", "{{.ID}} {{.Names}}"], capture_output=True, text=True, check=False)
    out = []
    for line in r.stdout.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("/").startswith(prefixes):
            out.append(parts[0])
    return out


def cgroup_dirs(name):
    import glob

    out = set()
    for top in glob.glob("/sys/fs/cgroup/*/" + name):
        out.update(dp for dp, dummy_dirs, dummy_files in os.walk(top))
    return out


# -- the run -------------------------------------------------------------------------------
RECAP = re.compile(r"localhost\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)")


def play(bindir, path, env, must_change, extra=()):
    t = time.perf_counter()
    p = subprocess.run([os.path.join(bindir, "ansible-playbook"), "-i", "localhost,", "-c", "local", path, *extra], env=env,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False)
    dt = time.perf_counter() - t
    m = RECAP.search(p.stdout)
    if p.returncode != 0 or not m or int(m.group(4)) or int(m.group(3)):
        raise RuntimeError("playbook %s failed:\n%s" % (path, p.stdout[-3000:]))
    changed = int(m.group(2))
    if must_change is not None and bool(changed) != must_change:
        raise RuntimeError("playbook %s: changed=%d, expected %s:\n%s"
                           % (path, changed, "a change" if must_change else "none", p.stdout[-3000:]))
    return dt


def run(args):
    with common.host_library(args.no_library) as extra:
        run_with(args, extra)


def run_with(args, extra):
    from ansible_collections.appc.rocket.plugins.module_utils.stage0.store import Store

    n = args.count
    work = tempfile.mkdtemp(prefix="rocket-bench-collections-", dir=args.workdir)
    data = os.path.join(work, "rocket")
    meta = {"count": n, "runs": args.runs, "peers": not args.no_peers,
            "rocket_library": "installed as the runtime role does (our tasks run from it)" if extra else "none (full payload)"}
    dockerd, podman_ids, docker_ids = None, [], []
    before = common.host_state()
    docker_cg_before = cgroup_dirs("docker")
    residue = common.peer_residue()
    peer_errors = {}
    try:
        aci = common.pods.busybox_aci(work)
        with Store(data) as s:
            s.import_file(aci)
        env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=common.COLLECTIONS, ANSIBLE_LOCALHOST_WARNING="false",
                   ANSIBLE_INVENTORY_UNPARSED_WARNING="false", ANSIBLE_DEPRECATION_WARNINGS="false")
        variants = base_variants(n) + rocket_variants(data, n)
        bindir = os.path.dirname(sys.executable)
        if not args.no_peers:
            install = common.have_debian_packages(PACKAGES, install=not args.no_install)
            meta["debian_packages"] = install
            bindir = ensure_venv(not args.no_install)
            # The peers' own collections come from the venv's `ansible` package; ours from the checkout.
            site = subprocess.run([os.path.join(bindir, "python"), "-c",
                                   "import ansible_collections, os; print(os.path.dirname(list(ansible_collections.__path__)[0]))"],
                                  capture_output=True, text=True, check=True).stdout.strip()
            env["ANSIBLE_COLLECTIONS_PATH"] = common.COLLECTIONS + ":" + site
            tar = root_tar(os.path.join(work, "busybox-rootfs"), work)
            if install.get("podman") or not shutil.which("podman"):
                peer_errors["containers.podman"] = "podman: %s" % (install.get("podman") or "not installed")
            else:
                conf, notes = podman_conf(work)
                env["CONTAINERS_CONF"] = conf
                meta["podman_config"] = notes
                subprocess.run(["podman", "import", "-q", tar, PODMAN_IMAGE], env=env, check=True, stdout=subprocess.DEVNULL)
                variants += podman_variants(n)
            if install.get("docker.io") or not shutil.which("dockerd"):
                peer_errors["community.docker"] = "docker.io: %s" % (install.get("docker.io") or "not installed")
            else:
                dockerd = Dockerd(work)
                dockerd.start()
                env["DOCKER_HOST"] = dockerd.host
                with open(tar, "rb") as f:
                    dockerd.docker("import", "-", DOCKER_IMAGE, stdin=f)
                meta["dockerd"] = "--iptables=false --bridge=none, data root of its own, cgroupfs"
                variants += docker_variants(n)
            meta["ansible"] = subprocess.run([os.path.join(bindir, "ansible"), "--version"], capture_output=True,
                                             text=True, check=False).stdout.splitlines()[0]
        env["ANSIBLE_PYTHON_INTERPRETER"] = os.path.join(bindir, "python")
        files = {}
        for v in variants:
            for ph in PHASES:
                files[v.key, ph[0]] = path = os.path.join(work, "%s-%s.yml" % (v.key, ph[0]))
                with open(path, "w") as f:
                    f.write(HEAD + v.body(ph))
        rng = random.Random(args.seed)
        for dummy in range(args.runs):
            for ph in PHASES:
                order = list(variants)
                rng.shuffle(order)
                for v in order:
                    must = ph[3] if v.collection != "ansible.builtin" else False
                    v.times[ph[0]].append(play(bindir, files[v.key, ph[0]], env, must, extra))
                    print("  %-8s %-55s %.2f s" % (ph[0], v.label, v.times[ph[0]][-1]), flush=True)
        if extra:  # the host's library is what our rows measured: one more no-change run says so
            p = subprocess.run([os.path.join(bindir, "ansible-playbook"), "-vvv", "-i", "localhost,", "-c", "local",
                                files["rocket_batch", "remove"], *extra], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, check=False)
            if not re.search(r"appc.rocket: (thin payload|direct), the module ran from", p.stdout):
                raise RuntimeError("the host's library was not used:\n" + p.stdout[-3000:])
        rows = results(variants, n, peer_errors, meta)
    finally:
        left = []
        # Ours: every pod of the bench's store. The peers': the containers of our names, by ID.
        uuids = set()
        if os.path.isdir(data):
            from ansible_collections.appc.rocket.plugins.module_utils.stage0 import pod as podmod

            with Store(data) as s:
                uuids = {p.uuid for p in podmod.list_pods(s.dd)}
                common.pods.remove_all(s.dd)
        if shutil.which("podman"):
            podman_ids = containers_named(["podman"], ("pl-", "pb-"))
            if podman_ids:
                subprocess.run(["podman", "rm", "-f", "-t", "0"] + podman_ids, capture_output=True, check=False)
            subprocess.run(["podman", "rmi", "-f", PODMAN_IMAGE], capture_output=True, check=False)
        if dockerd is not None:
            docker_ids = containers_named(["/usr/bin/docker", "-H", dockerd.host], ("dl-",))
            if docker_ids:
                dockerd.docker("rm", "-f", *docker_ids, check=False)
            dockerd.stop()
            with open("/proc/self/mountinfo") as f:
                mine = sorted((ln.split()[4] for ln in f if ln.split()[4].startswith(work)), key=len, reverse=True)
            for m in mine:
                subprocess.run(["umount", "-l", m], capture_output=True, check=False)
            for d in sorted(cgroup_dirs("docker") - docker_cg_before, key=len, reverse=True):
                try:
                    os.rmdir(d)
                except OSError as e:
                    left.append("%s (%s)" % (d, e.strerror))
        common.pods.reap(settle=0.1)
        common.undo_podman_mounts(before)
        left += common.clean_peer_residue(residue)
        shutil.rmtree(work, ignore_errors=True)
        # Other work runs on this host: only our mounts and our pods' cgroups are ours to judge.
        found = common.leaks(before, common.host_state(), uuids=uuids, prefixes=(work,))
        found = {k: v for k, v in found.items() if k in ("mounts", "rocket_cgroups")}
        if left:
            found["peer_residue"] = left
        meta["left_behind"] = found
        if found:
            print("left behind: %s" % found)
    common.write_results("collections", rows, meta)
    report(rows, meta, n)


def results(variants, n, peer_errors, meta):
    med = {(v.key, p): common.median(t) for v in variants for p, t in v.times.items() if t}
    empty = {p[0]: med["empty", p[0]] for p in PHASES}
    rows = []
    for v in variants:
        if v.key == "empty":
            continue
        r = {"key": v.key, "variant": v.label, "collection": v.collection, "batch": v.batch}
        for p in PHASES:
            t = med[v.key, p[0]] - empty[p[0]]
            r[p[0] + "_s"] = round(t, 3)
            r[p[0] + "_per_container_ms"] = round(t * 1000 / n, 1)
        rows.append(r)
    for coll, err in sorted(peer_errors.items()):
        rows.append({"key": coll, "variant": coll, "collection": coll, "error": err})
    meta["empty_playbook_s"] = {p: round(t, 3) for p, t in empty.items()}
    by = {r["key"]: r for r in rows}
    ping = by["ping_loop"]["noop_per_container_ms"]
    ours = by["rocket_loop"]["noop_per_container_ms"]
    goals = {}
    pl, dl = by.get("podman_loop"), by.get("docker_loop")
    if pl and "noop_s" in pl:
        goals["noop_task_vs_podman"] = round(ours / pl["noop_per_container_ms"], 2)
        goals["batch_noop_vs_podman_loop"] = round(by["rocket_batch"]["noop_s"] / pl["noop_s"], 3)
        goals["batch_create_vs_podman_loop"] = round(by["rocket_batch"]["create_s"] / pl["create_s"], 3)
        goals["batch_remove_vs_podman_loop"] = round(by["rocket_batch"]["remove_s"] / pl["remove_s"], 3)
    if dl and "noop_s" in dl:
        above = dl["noop_per_container_ms"] - ping
        goals["noop_above_ping_ms"] = {"ours": round(ours - ping, 1), "docker": round(above, 1)}
        if above > 0:
            goals["noop_above_ping_vs_docker"] = round((ours - ping) / above, 2)
    meta["goals"] = goals
    return rows


def report(rows, meta, n):
    out = []
    for r in rows:
        if "error" in r:
            out.append([r["variant"], "not measured: " + r["error"], "", ""])
            continue
        out.append([r["variant"]] + ["%s s (%s ms each)" % (r[p + "_s"], r[p + "_per_container_ms"])
                                     for p in ("create", "noop", "remove")])
    print(common.table(["%d containers" % n, "create", "no-op", "remove"], out))
    print("whole ansible-playbook runs minus an empty playbook (%s), medians of %d rounds, interleaved"
          % (meta["empty_playbook_s"], meta["runs"]))
    print("appc.rocket's host library: %s" % meta["rocket_library"])
    print("goals: %s" % json.dumps(meta["goals"]))


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=20, help="containers per variant")
    ap.add_argument("--runs", type=int, default=1, help="rounds of create, no-op, remove (medians)")
    ap.add_argument("--no-peers", action="store_true", help="appc.rocket alone, with this interpreter's Ansible")
    ap.add_argument("--no-install", action="store_true", help="neither apt-get nor the benchmark venv")
    ap.add_argument("--quick", action="store_true", help="--count 2 --no-peers: the harness only")
    ap.add_argument("--no-library", action="store_true", help="no host library: appc.rocket's full payload")
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--seed", type=int, default=19)
    a = ap.parse_args()
    if a.quick:
        a.count, a.no_peers = 2, True
    run(a)

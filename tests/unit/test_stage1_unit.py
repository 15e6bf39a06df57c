"""Unit tests of the default stage1 that need no root: cgroup writers (v1 and v2 against a
fake cgroup root), passwd/group lookup, capability sets, in-root path resolution, the
stage1 image content."""
import os

import pytest

from ansible_collections.appc.rocket.plugins.module_utils.stage0 import schema
from ansible_collections.appc.rocket.plugins.module_utils.stage1 import (
    cgroups, contract, enter, image, init, isolators, linux, paths, users)

PKG = os.path.dirname(image.__file__)


# --------------------------------------------------------------------------- cgroups

def _read(path):
    with open(path) as f:
        return f.read()


def test_cgroup_v2_writer(tmp_path, monkeypatch):
    attached = []
    monkeypatch.setattr(cgroups.devices_bpf, "attach", lambda d, prog: attached.append((d, prog)))
    root = tmp_path / "cg"
    root.mkdir()
    (root / "cgroup.controllers").write_text("cpuset cpu io memory hugetlb pids\n")
    cg = cgroups.PodCgroups("u1", v1={}, v2=str(root), discover=False)
    assert cg.v2_controllers == ["memory", "cpu", "pids", "cpuset", "io"]
    cg.create_pod()
    iso = isolators.parse([{"name": "resource/memory", "value": {"limit": "64Mi", "request": "32Mi"}},
                           {"name": "resource/cpu", "value": {"request": "250m", "limit": "1500m"}}])
    cg.create_apps([("web", iso.limits())])
    pod = root / "rocket" / "u1"
    assert _read(root / "cgroup.subtree_control") == "+memory +cpu +pids +cpuset +io"
    assert _read(root / "rocket" / "cgroup.subtree_control") == "+memory +cpu +pids +cpuset +io"
    assert _read(pod / "cgroup.subtree_control") == "+memory +cpu +pids +cpuset +io"
    assert _read(pod / "cgroup.procs") == "0"
    assert _read(pod / "_stage1" / "cgroup.procs") == "0"
    assert _read(pod / "web" / "memory.max") == str(64 * 2 ** 20)
    assert _read(pod / "web" / "memory.low") == str(32 * 2 ** 20)
    assert _read(pod / "web" / "cpu.max") == "150000 100000"
    assert _read(pod / "web" / "cpu.weight") == str(1 + ((256 - 2) * 9999) // 262142)
    assert not (pod / "web" / "memory.limit_in_bytes").exists()
    assert attached == [(str(pod / "web"), cgroups.devices_bpf.assemble(cgroups.ALLOWED_DEVICES))]
    assert "devices: allow-list enforced by a cgroup v2 BPF device program" in cg.notes
    (pod / "web" / "cgroup.procs").write_text("")
    fds = cg.open_app_procs("web")
    try:
        cgroups.join_fds(fds)
    finally:
        for fd in fds:
            os.close(fd)
    assert _read(pod / "web" / "cgroup.procs") == "0"


def test_cgroup_v1_writer(tmp_path, monkeypatch):
    monkeypatch.setattr(cgroups.devices_bpf, "attach", lambda d, prog: None)
    v1 = {}
    for c in ("memory", "cpu", "pids", "devices"):
        (tmp_path / c).mkdir()
        v1[c] = (str(tmp_path / c), [c])
    (tmp_path / "unified").mkdir()
    cg = cgroups.PodCgroups("u2", v1=v1, v2=str(tmp_path / "unified"), discover=False)
    assert cg.v2_controllers == []
    cg.create_pod()
    iso = isolators.parse([{"name": "resource/memory", "value": {"limit": "50M", "request": "20M"}},
                           {"name": "resource/cpu", "value": {"limit": "500m"}},
                           {"name": "os/linux/cpu-shares", "value": 512}])
    cg.create_apps([("a", iso.limits())])
    assert _read(tmp_path / "memory/rocket/u2/a/memory.limit_in_bytes") == "50000000"
    assert _read(tmp_path / "memory/rocket/u2/a/memory.soft_limit_in_bytes") == "20000000"
    assert _read(tmp_path / "cpu/rocket/u2/a/cpu.cfs_quota_us") == "50000"
    assert _read(tmp_path / "cpu/rocket/u2/a/cpu.cfs_period_us") == "100000"
    assert _read(tmp_path / "cpu/rocket/u2/a/cpu.shares") == "512"
    assert _read(tmp_path / "devices/rocket/u2/a/devices.deny") == "a"
    assert (tmp_path / "unified/rocket/u2/a").is_dir()
    assert not (tmp_path / "unified/cgroup.subtree_control").exists()


@pytest.mark.parametrize("v2", [False, True])
def test_keeper_joins_the_pods_cpu_budget(tmp_path, monkeypatch, v2):
    """The keeper's leaf, and the pod quota as the sum of its apps' (finding 7 of #13)."""
    monkeypatch.setattr(cgroups.devices_bpf, "attach", lambda d, prog: None)
    if v2:
        (tmp_path / "cgroup.controllers").write_text("cpu memory pids\n")
        cg = cgroups.PodCgroups("u3", v1={}, v2=str(tmp_path), discover=False)
    else:
        (tmp_path / "cpu").mkdir()
        cg = cgroups.PodCgroups("u3", v1={"cpu": (str(tmp_path / "cpu"), ["cpu"])}, discover=False)
    root = str(tmp_path) if v2 else str(tmp_path / "cpu")
    cg.create_pod()
    one = isolators.parse([{"name": "resource/cpu", "value": {"limit": "100m"}}]).limits()
    two = isolators.parse([{"name": "resource/cpu", "value": {"limit": "250m"}}]).limits()
    cg.create_apps([("a", one), ("b", two)])
    pod = os.path.join(root, "rocket", "u3")
    if not v2:  # a fake v1 cgroup has no defaults: an unlimited quota reads -1
        for d in ("a", "b"):
            assert _read(os.path.join(pod, d, "cpu.cfs_quota_us")) in ("10000", "25000")
    note = cg.keeper_join(["a", "b"], pid=4242)
    assert _read(os.path.join(pod, cgroups.KEEPER_LEAF, "cgroup.procs")) == "4242"
    if v2:
        assert _read(os.path.join(pod, "cpu.max")) == "35000 100000"
    else:
        assert _read(os.path.join(pod, "cpu.cfs_quota_us")) == "35000"
    assert "35000" in note
    # an app without a limit: the pod has none either, the keeper still counts there
    cg2 = cgroups.PodCgroups("u4", v1=cg.v1, v2=cg.v2, discover=False)
    cg2.create_pod()
    cg2.create_apps([("a", one), ("free", isolators.parse([]).limits())])
    pod2 = os.path.join(root, "rocket", "u4")
    if v2:
        with open(os.path.join(pod2, "free", "cpu.max"), "w") as f:
            f.write("max 100000")
    else:
        for name, value in (("cpu.cfs_quota_us", "-1"), ("cpu.cfs_period_us", "100000")):
            with open(os.path.join(pod2, "free", name), "w") as f:
                f.write(value)
    assert cg2.keeper_join(["a", "free"], pid=4243) == "cpu: the keeper's log pump counts against the pod's cgroup"
    assert not os.path.exists(os.path.join(pod2, "cpu.max" if v2 else "cpu.cfs_quota_us"))
    assert cgroups.PodCgroups("u5", v1={}, v2=None, discover=False).keeper_join(["a"]) is None


def test_hierarchies_from_mountinfo(tmp_path):
    mi = tmp_path / "mountinfo"
    mi.write_text(
        "30 25 0:26 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n"
        "31 25 0:27 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n"
        "32 25 0:28 / /sys/fs/cgroup/mem\\040ory rw - cgroup cgroup rw,memory\n"
        "33 25 0:29 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,xattr,name=systemd\n")
    v1, v2 = cgroups.hierarchies(str(mi))
    assert v2 == "/sys/fs/cgroup/unified"
    assert v1 == {"cpu": ("/sys/fs/cgroup/cpu,cpuacct", ["cpu", "cpuacct"]),
                  "memory": ("/sys/fs/cgroup/mem ory", ["memory"])}
    # a booted nspawn host on a hybrid machine: v1 controllers read-only, unified writable
    mi.write_text(
        "40 35 0:30 / /sys/fs/cgroup/memory ro,nosuid,nodev,noexec,relatime - cgroup cgroup rw,memory\n"
        "41 35 0:26 / /sys/fs/cgroup/unified rw,nosuid,nodev - cgroup2 cgroup rw\n"
        "42 35 0:31 / /sys/fs/cgroup/pids rw,nosuid - cgroup cgroup rw,pids\n")
    assert cgroups.hierarchies(str(mi)) == ({"pids": ("/sys/fs/cgroup/pids", ["pids"])}, "/sys/fs/cgroup/unified")
    mi.write_text("43 35 0:26 / /sys/fs/cgroup ro,nosuid - cgroup2 cgroup2 rw\n")
    assert cgroups.hierarchies(str(mi)) == ({}, None)


# --------------------------------------------------------------------------- users

def _db(tmp_path):
    (tmp_path / "passwd").write_text("root:x:0:0::/root:/bin/sh\n# comment\n"
                                     "app:x:1000:1001::/home/app:/bin/sh\nbad:x:notanumber:1::/:\n")
    (tmp_path / "group").write_text("root:x:0:\napp:x:1001:\n")
    return str(tmp_path / "passwd"), str(tmp_path / "group")


def test_user_and_group_lookup(tmp_path):
    pw, gr = _db(tmp_path)
    assert users.resolve_user("app", pw) == (1000, "/home/app")
    assert users.resolve_user("1000", pw) == (1000, "/home/app")
    assert users.resolve_user("4242", pw) == (4242, None)
    assert users.resolve_group("app", gr) == 1001
    assert users.resolve_group("77", gr) == 77
    f = tmp_path / "owned"
    f.write_text("")
    st = os.stat(f)
    assert users.resolve_user(str(f), pw)[0] == st.st_uid
    assert users.resolve_group(str(f), gr) == st.st_gid
    with pytest.raises(users.UserLookupError, match="not found"):
        users.resolve_user("bad", pw)
    with pytest.raises(users.UserLookupError, match="not found"):
        users.resolve_group("nope", gr)
    with pytest.raises(users.UserLookupError, match="not found"):
        users.resolve_user("app", str(tmp_path / "missing"))


def test_enter_user_spec_is_dockers_user_group(tmp_path):
    pw, gr = _db(tmp_path)
    (tmp_path / "group").write_text("root:x:0:\napp:x:1001:\nwheel:x:10:root,app\ndocker:x:999:app\nbad:x:x:app\n")
    assert users.resolve_spec("app", pw, gr) == (1000, 1001, [1001, 10, 999], "/home/app")
    assert users.resolve_spec("1000", pw, gr) == (1000, 1001, [1001, 10, 999], "/home/app")
    assert users.resolve_spec("app:wheel", pw, gr) == (1000, 10, [10, 999], "/home/app")
    assert users.resolve_spec("root:0", pw, gr) == (0, 0, [0, 10], "/root")
    assert users.resolve_spec("4242", pw, gr) == (4242, 4242, [4242], None)  # not listed: its own number
    assert users.resolve_spec("4242:77", pw, gr) == (4242, 77, [77], None)
    for bad in ("", ":app", "app:", "/etc/passwd", "app:/etc/group"):
        with pytest.raises(users.UserLookupError, match="not user"):
            users.resolve_spec(bad, pw, gr)
    with pytest.raises(users.UserLookupError, match="group 'nope' not found"):
        users.resolve_spec("app:nope", pw, gr)
    with pytest.raises(users.UserLookupError, match="user 'nope' not found"):
        users.resolve_spec("nope", pw, gr)


def test_enter_takes_user(tmp_path):
    from ansible_collections.appc.rocket.plugins.module_utils.stage1 import enter
    o = enter.parse_args(["--pid=5", "--app=a", "--user=app:wheel", "--", "id"])
    assert o["user"] == "app:wheel" and o["cmd"] == ["id"]
    assert enter.parse_args(["--pid=5", "--app=a", "--", "id"])["user"] is None
    with pytest.raises(ValueError, match="--user needs a user"):
        enter.parse_args(["--pid=5", "--app=a", "--user=", "--", "id"])


def test_fifo_symlink_and_huge_passwd_are_refused(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)   # a blocking open would hang here
    with pytest.raises(users.UserLookupError, match="not a regular file"):
        users.resolve_user("app", str(fifo))
    pw, dummy = _db(tmp_path)
    link = tmp_path / "link"
    link.symlink_to(pw)
    with pytest.raises(users.UserLookupError, match="not a regular file"):
        users.resolve_user("app", str(link))
    huge = tmp_path / "huge"
    with open(huge, "wb") as f:
        f.truncate(users.MAX_DB_SIZE + 1)
    with pytest.raises(users.UserLookupError, match="larger than"):
        users.resolve_user("app", str(huge))
    # numbers never need the file
    assert users.resolve_user("12", str(fifo)) == (12, None)


def test_read_db_in_a_root_stays_in_it(tmp_path):
    """stage0 and the connection read an image's passwd from outside: links resolve inside it."""
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "passwd").write_text("app:x:1000:1001::/home/app:/bin/sh\n")
    entries = users.read_db_in(str(root), "/etc/passwd")
    assert users.user_name(entries, 1000) == "app" and users.user_name(entries, 7) is None
    assert users.primary_gid(entries, "app") == users.primary_gid(entries, "1000") == 1001
    pw, dummy = _db(tmp_path)
    (root / "etc" / "out").symlink_to(pw)  # an absolute link names a path in the root, not the host's
    assert users.read_db_in(str(root), "/etc/out") == []
    os.mkfifo(root / "etc" / "fifo")
    with pytest.raises(users.UserLookupError, match="not a regular file"):
        users.read_db_in(str(root), "/etc/fifo")


# --------------------------------------------------------------------------- isolators

def test_capability_table_matches_schema():
    assert linux.CAP_NUMBERS == schema.CAPABILITY_NUMBERS
    # podman's default: appc's without the three that reach outside the pod (issue 13).
    assert set(schema.DEFAULT_CAPABILITIES) - set(isolators.DEFAULT_CAPABILITIES) == \
        {"CAP_NET_RAW", "CAP_MKNOD", "CAP_AUDIT_WRITE"}
    assert set(isolators.DEFAULT_CAPABILITIES) < set(schema.DEFAULT_CAPABILITIES)


def test_capability_sets():
    default = isolators.cap_mask(isolators.DEFAULT_CAPABILITIES)
    assert isolators.cap_names(default) == sorted(isolators.DEFAULT_CAPABILITIES, key=linux.CAP_NUMBERS.get)
    iso = isolators.parse([])
    assert iso.capability_sets(0) == (default, default, default, 0, 0)
    assert iso.capability_sets(1000) == (default, 0, 0, 0, 0)
    iso = isolators.parse([{"name": "os/linux/capabilities-retain-set",
                            "value": {"set": ["CAP_NET_BIND_SERVICE", "CAP_SYS_ADMIN"]}}])
    m = (1 << 10) | (1 << 21)
    assert iso.capability_sets(1000) == (m, m, m, m, m)
    assert iso.capability_sets(0) == (m, m, m, 0, 0)
    iso = isolators.parse([{"name": "os/linux/capabilities-remove-set",
                            "value": {"set": ["CAP_KILL", "CAP_SYS_CHROOT"]}}])
    assert iso.bounding == default & ~((1 << 5) | (1 << 18))
    assert iso.capability_sets(5)[1:] == (0, 0, 0, 0)
    with pytest.raises(ValueError):
        isolators.parse([{"name": "os/linux/capabilities-retain-set", "value": {"set": ["CAP_X"]}}])


def test_isolators_enforced_and_ignored():
    iso = isolators.parse([
        {"name": "os/linux/no-new-privileges", "value": True},
        {"name": "os/linux/oom-score-adj", "value": -100},
        {"name": "resource/memory", "value": {"request": "1Gi", "limit": "2Gi"}},
        {"name": "os/linux/seccomp-remove-set", "value": {"set": ["reboot"]}},
        {"name": "resource/block-iops", "value": {"default": True, "limit": "10"}},
    ])
    assert iso.no_new_privileges and iso.oom_score_adj == -100
    assert iso.memory_limit == 2 * 2 ** 30
    assert iso.ignored == ["resource/block-iops"] and iso.memory_request == 2 ** 30
    assert "os/linux/seccomp-remove-set" in iso.enforced and iso.seccomp.names == ["reboot"]
    assert iso.reasons["resource/block-iops"]
    assert isolators.quantity("1.5Gi") == 3 * 2 ** 29
    assert isolators.quantity("1e3") == 1000
    with pytest.raises(ValueError):
        isolators.quantity("12Q")


# --------------------------------------------------------------------------- paths

@pytest.fixture
def jail(tmp_path):
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "passwd").write_text("inside")
    (root / "toroot").symlink_to("/")
    (root / "up").symlink_to("../../../../..")
    (root / "etclink").symlink_to("/etc")
    (root / "loop").symlink_to("loop")
    fd = os.open(root, os.O_PATH | os.O_DIRECTORY)
    yield root, fd
    os.close(fd)


@pytest.mark.parametrize("use_walker", [False, True])
def test_resolve_stays_inside(jail, use_walker):
    root, rootfd = jail

    def res(path, flags=os.O_PATH):
        if use_walker:
            return paths.walk(rootfd, path, flags)
        return paths.resolve(rootfd, path, flags)

    for p in ("/toroot/etc/passwd", "/up/etc/passwd", "/etclink/passwd", "../../etc/passwd",
              "/toroot/../toroot/etclink/../etc/passwd"):
        fd = res(p, os.O_RDONLY)
        try:
            assert os.read(fd, 100) == b"inside", p
        finally:
            os.close(fd)
    fd = res("/toroot")
    try:
        assert paths.same_file(fd, rootfd)
    finally:
        os.close(fd)
    with pytest.raises(OSError) as e:
        res("/loop/x")
    assert e.value.errno == 40
    with pytest.raises(FileNotFoundError):
        res("/toroot/nope")


def test_mkdirs_through_symlinks_creates_inside(jail, tmp_path):
    root, rootfd = jail
    outside = "/rocket-unit-%d" % os.getpid()
    fd = paths.mkdirs(rootfd, "/toroot%s/a/b" % outside)
    os.close(fd)
    assert (root / outside.lstrip("/") / "a" / "b").is_dir()
    assert not os.path.exists(outside)
    fd = paths.mkfile(rootfd, "/etclink/newfile")
    os.close(fd)
    assert (root / "etc" / "newfile").is_file()
    with pytest.raises(ValueError):
        paths.mkdirs(rootfd, "/a/../b")


# --------------------------------------------------------------------------- image

def test_image_files_are_the_whole_package():
    files = image.files()
    assert files == image.files()
    mods = sorted(n[:-3] for n in os.listdir(PKG) if n.endswith(".py"))
    assert sorted(image.MODULES) == mods
    for name in ("init", "enter", "gc"):
        assert b"from stage1 import %s as program" % name.encode() in files[name]
    pycs = sorted(p for p in files if p.endswith(".pyc"))
    assert len(pycs) == len(image.MODULES) and all("/__pycache__/" in p for p in pycs)
    for path, data in image.sources().items():
        assert files[path] == data
        if path.startswith("stage1/"):
            text = data.decode()
            for line in text.splitlines():
                s = line.strip()
                if s.startswith(("import ", "from ")):
                    assert "ansible" not in s and "stage0" not in s, (path, s)
                if s.startswith("from ") and " import " in s:
                    mod = s.split()[1]
                    assert mod.startswith(".") or "." not in mod or mod in ("os.path",), (path, s)


def _relative_imports(name):
    """The package's modules that stage1/<name>.py imports (anywhere in it, but for the
    list in image._package, which is what is checked)."""
    import ast

    with open(os.path.join(PKG, name + ".py"), "rb") as f:
        todo = [ast.parse(f.read())]
    out = set()
    while todo:
        node = todo.pop()
        if isinstance(node, ast.FunctionDef) and node.name == "_package":
            continue
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            out.update([node.module] if node.module else [a.name for a in node.names])
        todo.extend(ast.iter_child_nodes(node))
    return out


def test_module_list_is_what_the_programs_import():
    """image.MODULES (what the image carries and Ansiballz ships) is exactly the package's
    programs, stage0's entry points into it, and what they import, transitively."""
    roots = ["init", "enter", "gc", "keeper", "pid1",   # the launchers' programs (contract.LAUNCHERS)
             "launch", "image"]                          # what stage0 imports to run and build a pod
    assert sorted(contract.LAUNCHERS) == sorted(roots[:5])
    seen, todo = set(), list(roots)
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(_relative_imports(name))
    assert sorted(image.MODULES) == sorted(seen | {"__init__"})
    assert len(set(image.MODULES)) == len(image.MODULES)


def test_contract_stands_alone():
    """Both sides import the contract, also on every pod start: the standard library's os only."""
    import ast

    with open(os.path.join(PKG, "contract.py"), "rb") as f:
        tree = ast.parse(f.read())
    imported = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    assert imported == ["os"] and not any(isinstance(n, ast.ImportFrom) for n in ast.walk(tree))


def test_manifest_is_a_valid_image_manifest():
    m = image.manifest()
    schema.parse_image_manifest(m)
    ann = {a["name"]: a["value"] for a in m["annotations"]}
    assert ann == {"appc.rocket/stage1/run": "/init", "appc.rocket/stage1/enter": "/enter",
                   "appc.rocket/stage1/gc": "/gc", "appc.rocket/stage1/gc-many": "/gc",
                   "appc.rocket/stage1/keeper": "/keeper",
                   "appc.rocket/stage1/interface-version": "1"}


def test_argument_parsing():
    o = init.parse_args(["--debug", "--net=none", "--hostname=h", "u-1"])
    assert (o.debug, o.net, o.hostname, o.uuid) == (True, "none", "h", "u-1")
    with pytest.raises(ValueError):
        init.parse_args(["--net=a,,b", "u"])
    assert init.parse_args(["--net=default,back", "u"]).net == "default,back"  # private networks
    o = init.parse_args(["--hostname=web-1.example.com", "--domainname=corp_nis", "u"])
    assert (o.hostname, o.domainname) == ("web-1.example.com", "corp_nis")
    for bad in ("--hostname=a\n10.0.0.1 evil", "--hostname=" + "x" * 65, "--domainname=", "--domainname=a b"):
        with pytest.raises(ValueError, match=bad.split("=", maxsplit=1)[0]):
            init.parse_args([bad, "u"])
    with pytest.raises(ValueError):
        init.parse_args([])
    e = enter.parse_args(["--pid=5", "--app=a", "--env=A=1=2", "--chdir=/x", "--", "sh", "--x"])
    assert e == {"pid": 5, "app": "a", "env": [("A", "1=2")], "chdir": "/x", "cmd": ["sh", "--x"],
                 "user": None}
    with pytest.raises(ValueError):
        enter.parse_args(["--pid=5", "--app=../x", "--", "sh"])


def test_only_the_default_launcher_runs_in_process(tmp_path):
    from ansible_collections.appc.rocket.plugins.module_utils.stage1 import launch

    same = tmp_path / "init"
    same.write_bytes(contract.LAUNCHERS["init"].encode())
    longer = tmp_path / "init2"
    longer.write_bytes(contract.LAUNCHERS["init"].encode() + b"\nprint('more')\n")
    other = tmp_path / "init3"
    other.write_bytes(contract.LAUNCHERS["enter"].encode())
    link = tmp_path / "link"
    link.symlink_to(same)
    assert launch._is_default_launcher(str(same))
    assert not launch._is_default_launcher(str(longer))
    assert not launch._is_default_launcher(str(other))
    assert not launch._is_default_launcher(str(link))          # never through a symlink
    assert not launch._is_default_launcher(str(tmp_path / "missing"))
    assert launch._app_fds({"ROCKET_APP_FDS": "web:7,db:12"}) == [7, 12]
    assert launch._app_fds({}) == []


def test_keeper_log_lines_are_timestamped_and_rotated(tmp_path, monkeypatch):
    from ansible_collections.appc.rocket.plugins.module_utils.stage1 import logsink

    monkeypatch.setattr(logsink, "LOG_MAX", 200)
    path = str(tmp_path / "app.log")
    log = logsink.Log(path)
    log.feed(b"first line\nsecond ")
    log.feed(b"half\n")
    for i in range(20):
        log.feed(b"line %d\n" % i)
    log.feed(b"no newline at the end")
    log.close()
    current = open(path, "rb").read().decode()
    rotated = open(path + ".1", "rb").read().decode()
    assert len(current) <= 200 and len(rotated) <= 200
    assert current.splitlines()[-1].endswith(" no newline at the end")
    for line in (current + rotated).splitlines():
        stamp, dummy, text = line.partition(" ")
        assert stamp.endswith("Z") and stamp[10] == "T" and text
    assert not (tmp_path / "app.log.2").exists()  # one rotated file is kept


def test_open_host_refuses_a_symlink_in_any_component_and_names_it(tmp_path):
    from ansible_collections.appc.rocket.plugins.module_utils.stage1 import paths

    (tmp_path / "real" / "sub").mkdir(parents=True)
    (tmp_path / "link").symlink_to(tmp_path / "real")
    fd = paths.open_host(str(tmp_path / "real" / "sub"))
    try:
        assert os.path.samefile(paths.fd_path(fd), tmp_path / "real" / "sub")
    finally:
        os.close(fd)
    for path, component, why in ((tmp_path / "link" / "sub", tmp_path / "link", "is a symlink (to %s)" % (tmp_path / "real")),
                                 (tmp_path / "real" / "nope" / "x", tmp_path / "real" / "nope", "does not exist")):
        with pytest.raises(paths.HostPathError) as e:
            paths.open_host(str(path))
        assert (e.value.component, e.value.why) == (str(component), why)
    with pytest.raises(paths.HostPathError, match=r'\.\. is a "\.\." component'):
        paths.open_host(str(tmp_path / "real" / ".." / "real"))


def test_an_app_joins_the_identity_user_namespace_unless_it_keeps_a_host_only_capability():
    from types import SimpleNamespace
    from ansible_collections.appc.rocket.plugins.module_utils.stage1 import app as app_mod
    from ansible_collections.appc.rocket.plugins.module_utils.stage1 import isolators as iso_mod

    def joins(uid, host_net, isolators=(), base=None):
        ctx = SimpleNamespace(userns_fd=7, userns_base=base, host_net=host_net)
        return app_mod.app_userns(ctx, iso_mod.parse(list(isolators)), uid) == 7

    retain_admin = [{"name": "os/linux/capabilities-retain-set", "value": {"set": ["CAP_SYS_ADMIN"]}}]
    retain_bind = [{"name": "os/linux/capabilities-retain-set", "value": {"set": ["CAP_NET_BIND_SERVICE"]}}]
    assert joins(1000, True) and joins(1000, False)      # no capabilities: nothing to lose
    assert joins(0, False) and not joins(0, True)        # root binds ports below 1024 on the host
    assert not joins(1000, False, retain_admin) and not joins(0, False, retain_admin)
    assert joins(1000, False, retain_bind) and not joins(1000, True, retain_bind)
    assert joins(0, True, base=2 ** 31)                  # private_users: always

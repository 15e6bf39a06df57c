"""stage1/pid1.py without pods: what the lean PID 1 is handed (apps' states, Keeping's pipes
and unfinished lines) comes back the same, its OOM count reads the handed cgroup roots,
its prctl works without the ctypes package, and what it imports stays lean."""
import os
import subprocess
import sys

from ansible_collections.appc.rocket.plugins.module_utils.stage1 import contract, jsonlite, keeping, pid1

PKG = os.path.dirname(os.path.abspath(pid1.__file__))


class _App:
    name, stop_signal, stop_timeout = "web", 10, 2.5


def test_an_apps_state_survives_the_handover():
    st = pid1.AppState(_App())
    st.sup, st.report, st.ack, st.exec_host, st.app_pid = 7, 11, 12, 4242, 3
    st.buf, st.exit, st.sup_status, st.kill_at = b"run 1 \xff", (None, 9), 9, 123.5
    back = pid1.AppState.restore(jsonlite.loads(jsonlite.dumps(st.state())))
    assert (back.app.name, back.app.stop_signal, back.app.stop_timeout) == ("web", 10, 2.5)
    for k in ("sup", "report", "ack", "exec_host", "app_pid", "buf", "exit", "sup_status", "kill_at",
              "started", "running", "error", "finished", "stop_sent"):
        assert getattr(back, k) == getattr(st, k), k


def test_keeping_hands_its_pipes_and_unfinished_lines_over(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    os.makedirs(contract.LOGS)
    r1, w1 = os.pipe()
    r2, w2 = os.pipe()
    env = {contract.ENV_KEEPS: "web:%d,stage1:%d" % (r1, r2),
           contract.ENV_KEEPS_ARGS: jsonlite.dumps(["--log-max-size=4096", "--log-max-files=3", "--restart=no",
                                                    "--restarts=0"])}
    k = keeping.Keeping("u-1", env)
    os.write(w1, b"whole line\nhalf a li")
    assert k.feed(r1)
    state = jsonlite.loads(jsonlite.dumps(k.handover()))
    for log in k.logs.values():
        os.close(log.fd)  # what the exec does to the log files (O_CLOEXEC)
    taken = keeping.Keeping.taken("u-1", state)
    assert sorted(taken.fds()) == sorted([r1, r2]) and taken.stage1 == r2
    assert taken.logs[r1].max_size == 4096 and taken.logs[r1].keep == 2
    assert taken.rules.policy == "no" and taken.started == k.started
    os.write(w1, b"ne\n")
    assert taken.feed(r1)
    lines = open(contract.log_file("web"), "rb").read().splitlines()
    assert [x.split(b" ", 1)[1] for x in lines] == [b"whole line", b"half a line"]
    for fd in (r1, r2, w1, w2):
        os.close(fd)
    for log in taken.logs.values():
        os.close(log.fd)


def test_the_oom_count_reads_the_handed_cgroup_roots(tmp_path):
    v2 = tmp_path / "cg"
    (v2 / "rocket" / "u-1" / "web").mkdir(parents=True)
    (v2 / "cgroup.controllers").write_text("cpu memory pids\n")
    (v2 / "rocket" / "u-1" / "web" / "memory.events").write_text("low 0\noom 1\noom_kill 2\n")
    count = pid1._oom("u-1", {"v1": {}, "v2": str(v2)})
    assert count is not None and count("web") == 2 and count("db") is None
    assert pid1._oom("u-1", None) is None


def test_wait_status_without_ctypes():
    pid = os.fork()
    if pid == 0:
        os._exit(3)
    assert pid1.wait_status(os.waitpid(pid, 0)[1]) == (3, None)
    pid = os.fork()
    if pid == 0:
        os.kill(os.getpid(), 9)
    assert pid1.wait_status(os.waitpid(pid, 0)[1]) == (None, 9)


def test_the_lean_loop_is_lean_and_nondumpable():
    """What pid1's main imports (as the launcher runs it) holds no set-up module, no ctypes
    package, json, re or enum; its prctl makes the process non-dumpable."""
    code = ("import sys; sys.path.insert(0, %r); sys.dont_write_bytecode = True\n"
            "from stage1 import pid1, keeping\n"
            "pid1._prctl(pid1._PR_SET_DUMPABLE, 0)\n"
            "import _ctypes\n"
            "class I(_ctypes._SimpleCData): _type_ = 'i'\n"
            "class F(_ctypes.CFuncPtr): _flags_ = _ctypes.FUNCFLAG_CDECL; _restype_ = I\n"
            "print(F(_ctypes.dlsym(_ctypes.dlopen(None), 'prctl'))(I(3), I(0), I(0), I(0), I(0)))\n"
            "print(sorted(m for m in sys.modules if m.startswith('stage1.') or m in "
            "('ctypes', 'json', 're', 'enum', 'signal', 'socket')))" % os.path.dirname(PKG))
    out = subprocess.run([sys.executable, "-I", "-S", "-B", "-c", code], capture_output=True, text=True,
                         check=True).stdout.split("\n")
    assert out[0] == "0"  # PR_GET_DUMPABLE
    assert out[1] == str(["stage1.contract", "stage1.jsonlite", "stage1.keeping", "stage1.logsink", "stage1.pid1"]), out

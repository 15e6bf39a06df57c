"""stage1/landlock.py against the running kernel: forked processes, each in a domain of its
own as two apps of a pod would be (no pod, no root needed: no-new-privileges instead)."""
import ctypes
import os
import socket
import time

import pytest

from ansible_collections.appc.rocket.plugins.module_utils.stage1 import landlock, linux

ABI, WHY = landlock.probe()
needs_landlock = pytest.mark.skipif(not ABI, reason="no usable Landlock here: %s" % WHY)


def test_guard_rule():
    assert landlock.guard(0, "no Landlock here", 0) == {"enforced": False, "reason": "not enforced: no Landlock here"}
    assert landlock.guard(7, None, 0b11) == {"enforced": True, "abi": 7, "by": "landlock"}
    ptrace = 1 << linux.CAP_NUMBERS["CAP_SYS_PTRACE"]
    admin = 1 << linux.CAP_NUMBERS["CAP_SYS_ADMIN"]
    for bnd in (ptrace, admin, (1 << 41) - 1):  # a debugging sidecar, a nested runtime, privileged
        g = landlock.guard(7, None, bnd)
        assert g["enforced"] is False and "outside any Landlock domain" in g["reason"], g


def _as_user():
    """uid 1000 without capabilities, as a root app that setuid to another app's uid is:
    then only the domains keep the two apart (the kernel's ptrace check passes)."""
    if os.geteuid() == 0:
        os.setgroups([])
        os.setresgid(1000, 1000, 1000)
        os.setresuid(1000, 1000, 1000)
        linux.set_dumpable(True)  # as the app's exec makes it again after the uid change


def _in_domain(body):
    """Fork a child that enters a new domain and runs body(say); its pid and the read end of
    the pipe its say() lines go to."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(r)
            linux.set_no_new_privs()
            landlock.restrict_self()
            body(lambda words: os.write(w, (words + "\n").encode()))
            code = 0
        except BaseException as e:  # noqa: BLE001 - a child reports, never raises into pytest
            os.write(w, ("error=%r\n" % (e,)).encode())
        finally:
            os._exit(code)
    os.close(w)
    return pid, r


def _line(fd):
    out = b""
    while not out.endswith(b"\n"):
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        out += chunk
    return out.decode()


def _reap(pid):
    try:
        os.kill(pid, 9)
    except OSError:
        pass
    os.waitpid(pid, 0)


@needs_landlock
def test_sibling_domains_cannot_read_each_others_proc_but_signal_and_connect(tmp_path):
    name = "\0rocket-landlock-test-%d" % os.getpid()

    def app_a(say):
        srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        srv.bind(name)
        srv.listen(1)
        _as_user()
        child = os.fork()  # a child of a: the same domain, reads a's environ
        if child == 0:
            try:
                with open("/proc/%d/environ" % os.getppid(), "rb"):
                    os._exit(0)
            except OSError:
                os._exit(1)
        say("own-child=%d" % os.waitstatus_to_exitcode(os.waitpid(child, 0)[1]))
        conn = srv.accept()[0]
        say("accepted=%s" % conn.recv(16).decode())
        time.sleep(60)

    def app_b(say):
        src, dst = tmp_path / "x" / "f", tmp_path / "y" / "f"
        os.rename(str(src), str(dst))  # reparenting (REFER) is granted beneath /: files as before
        words = ["renamed=%d" % dst.exists()]
        _as_user()
        for what in ("environ", "mem"):
            try:
                with open("/proc/%d/%s" % (a, what), "rb"):
                    words.append("%s=read" % what)
            except OSError as e:
                words.append("%s=%s" % (what, e.errno))
        try:
            os.readlink("/proc/%d/root" % a)
            words.append("root=read")
        except OSError as e:
            words.append("root=%d" % e.errno)
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.ptrace(ctypes.c_long(16), ctypes.c_long(a), None, None) == 0:  # PTRACE_ATTACH
            words.append("ptrace=attached")
        else:
            words.append("ptrace=%d" % ctypes.get_errno())
        os.kill(a, 0)  # no signal scope was asked for
        c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        c.connect(name)  # nor an abstract unix socket scope
        c.send(b"hello")
        say(" ".join(words))

    a, ra = _in_domain(app_a)
    b, rb = None, None
    (tmp_path / "x").mkdir()
    (tmp_path / "y").mkdir()
    (tmp_path / "x" / "f").write_text("f")
    try:
        assert _line(ra) == "own-child=0\n", "a's own child could not read a's /proc"
        b, rb = _in_domain(app_b)
        words = _line(rb)
        assert words.split() == ["renamed=1", "environ=13", "mem=13", "root=13", "ptrace=1"], words
        assert _line(ra).strip() == "accepted=hello"
        # outside every domain (PID 1, the keeper): full access as before
        with open("/proc/%d/environ" % a, "rb"):
            pass
    finally:
        for pid, fd in ((a, ra), (b, rb)):
            if pid is not None:
                _reap(pid)
                os.close(fd)


@needs_landlock
def test_restrict_self_costs_little():
    """One ruleset, one rule and restrict_self: microseconds, not milliseconds, per app."""
    def timed(say):
        t = time.perf_counter()
        for dummy in range(10):  # nested domains (the kernel allows 16 layers): each as cheap
            landlock.restrict_self()
        say("us=%d" % ((time.perf_counter() - t) / 10 * 1e6))

    pid, r = _in_domain(timed)
    try:
        word = _line(r)
        assert word.startswith("us="), word
        assert int(word.strip()[3:]) < 5000, word
    finally:
        _reap(pid)
        os.close(r)


@needs_landlock
def test_a_domain_cannot_mount_even_in_its_own_namespaces():
    """What docs/isolation.md says an app in a domain loses: mounts, even in a user and mount
    namespace of its own (Landlock refuses topology changes in a domain)."""
    def mount_tmpfs(say):
        linux.unshare(linux.CLONE_NEWUSER | linux.CLONE_NEWNS)
        try:
            linux.mount("none", "/tmp", "tmpfs")
            say("mounted")
        except OSError as e:
            say("mount=%d" % e.errno)

    pid, r = _in_domain(mount_tmpfs)
    try:
        assert _line(r) == "mount=1\n"  # EPERM
    finally:
        _reap(pid)
        os.close(r)

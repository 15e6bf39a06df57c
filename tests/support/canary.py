"""A canary directory outside every destination: hostile-image tests assert it is untouched."""
import os
import shutil
import stat

CANARY = "/tmp/xyz/canary"


def snapshot(top):
    snap = {}
    for dirpath, dirnames, filenames in os.walk(top):
        for n in dirnames + filenames:
            p = os.path.join(dirpath, n)
            st = os.lstat(p)
            content = open(p, "rb").read() if stat.S_ISREG(st.st_mode) else None
            snap[p] = (st.st_mode, st.st_uid, st.st_nlink, st.st_mtime_ns, content)
    st = os.lstat(top)
    snap[top] = (st.st_mode, st.st_mtime_ns)
    return snap


def guard():
    """For a fixture (``yield from guard()``): /tmp/xyz/canary/file, /etc/passwd and
    /etc/x must be as they were after the test."""
    shutil.rmtree("/tmp/xyz", ignore_errors=True)
    os.makedirs(CANARY)
    with open(os.path.join(CANARY, "file"), "w") as f:
        f.write("canary\n")
    before = snapshot("/tmp/xyz")
    passwd = os.stat("/etc/passwd")
    with open("/etc/passwd", "rb") as f:
        passwd_bytes = f.read()
    yield CANARY
    assert snapshot("/tmp/xyz") == before, "something was written outside the destination"
    assert not os.path.exists("/etc/x") and not os.path.exists("/evil")
    assert os.stat("/etc/passwd").st_nlink == passwd.st_nlink
    with open("/etc/passwd", "rb") as f:
        assert f.read() == passwd_bytes, "/etc/passwd was written"
    shutil.rmtree("/tmp/xyz")

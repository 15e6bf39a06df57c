"""Named crash points: a test-only hook that kills the process right after a step.

The library calls ``hit("store.import.after_blob_rename")`` (one line) after each step whose
interruption must be survivable: a tmp write, a rename, an index update, a mount. Tests set
``ROCKET_CRASH_AT`` to one name and the process dies there by SIGKILL, exactly as a power
cut or an OOM kill would stop it; then they check that the store check finds nothing
dangling, that gc recovers every pod and that nothing leaks.

Cost when unset: one dictionary lookup in ``os.environ`` per point; nothing is imported.
``ROCKET_CRASH_LOG`` (optional) names a file to which every point reached is appended (one
name a line, before any kill), so a test can assert that each point in the source was hit.
Never set these in production.
"""
import os


def hit(name: str) -> None:
    """Die by SIGKILL here when ``ROCKET_CRASH_AT`` is ``name``; otherwise return at once."""
    env = os.environ
    if "ROCKET_CRASH_AT" not in env and "ROCKET_CRASH_LOG" not in env:
        return
    log = env.get("ROCKET_CRASH_LOG")
    if log:
        fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, (name + "\n").encode())
        finally:
            os.close(fd)
    if env.get("ROCKET_CRASH_AT") == name:
        os.kill(os.getpid(), 9)  # SIGKILL: no finally clause, no atexit, no flush

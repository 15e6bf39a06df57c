"""stage1 gc --many: one answer a line, in order, as soon as each pod is done (issue #19)."""
import io
import os
import uuid as uuidlib

from ansible_collections.appc.rocket.plugins.module_utils.stage1 import gc


class Chunks(io.RawIOBase):
    """stdin given line by line; records what had been answered when each line was read."""

    def __init__(self, lines, out):
        self.lines, self.out, self.seen = list(lines), out, []

    def readline(self, size=-1):
        self.seen.append(self.out.getvalue())
        return self.lines.pop(0) if self.lines else b""


def test_each_pod_is_answered_before_the_next_is_read(tmp_path):
    cwd = os.getcwd()
    a, b = str(uuidlib.uuid4()), str(uuidlib.uuid4())
    for u in (a, b):
        (tmp_path / u).mkdir()
    out = io.BytesIO()
    inp = Chunks([("%s %s\n" % (a, tmp_path / a)).encode(), b"../x /tmp\n", b"no-directory\n",
                  ("%s %s\n" % (b, tmp_path / "gone")).encode(), ("%s %s\n" % (b, tmp_path / b)).encode()], out)
    try:
        assert gc._many(inp, out) == 0
    finally:
        os.chdir(cwd)
    lines = out.getvalue().decode().splitlines()
    assert lines[0] == "%s ok" % a and lines[-1] == "%s ok" % b, lines
    assert lines[1].startswith("- failed input: not `<uuid> <pod directory>`"), lines
    assert lines[2].startswith("- failed input:"), lines
    assert lines[3].startswith("%s failed %s: " % (b, tmp_path / "gone")), lines
    assert len(lines) == 5
    assert inp.seen[1] == b"%s ok\n" % a.encode()  # answered before the next line was read


def test_one_pod_usage():
    assert gc.main([]) == 254 and gc.main(["a", "b"]) == 254 and gc.main(["../x"]) == 254

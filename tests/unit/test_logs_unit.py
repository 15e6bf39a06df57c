"""Log options without pods: their checks (errors name the option), the keeper's flags, the
keeper's journald writer against a datagram socket of ours (what journald receives: one
entry per line, native protocol fields), its file fallback, and the file driver's rotation."""
import os
import socket

import pytest

from ansible_collections.appc.rocket.plugins.module_utils.stage0 import logs
from ansible_collections.appc.rocket.plugins.module_utils.stage0.errors import ValidationError
from ansible_collections.appc.rocket.plugins.module_utils.stage1 import logsink


def test_log_options_normalize_with_todays_defaults():
    assert logs.normalize() == {"log_driver": "file", "log_max_size": 1 << 20, "log_max_files": 2}
    assert logs.normalize("file", "10m", 5) == {"log_driver": "file", "log_max_size": 10 << 20, "log_max_files": 5}
    assert logs.normalize("file", 4096, 1)["log_max_size"] == 4096
    assert logs.normalize("journald") == {"log_driver": "journald"}


@pytest.mark.parametrize("args, option", [
    (("syslog",), "log_driver"),
    ((True,), "log_driver"),
    (("journald", "1m"), "log_max_size"),
    (("journald", None, 3), "log_max_files"),
    (("file", "1k"), "log_max_size"),
    (("file", "lots"), "log_max_size"),
    (("file", -5), "log_max_size"),
    (("file", None, 0), "log_max_files"),
    (("file", None, 101), "log_max_files"),
    (("file", None, True), "log_max_files"),
    (("file", None, "3"), "log_max_files"),
])
def test_bad_log_options_name_the_option(args, option):
    with pytest.raises(ValidationError) as e:
        logs.normalize(*args)
    assert e.value.path == option and str(e.value).startswith(option + ":")


def test_keeper_flags_only_when_not_the_default():
    assert logs.keeper_flags({}, "web") == []  # a pod keeps the keeper command line it had before
    assert logs.keeper_flags({"log_max_files": 3}, "web") == ["--log-max-size=1048576", "--log-max-files=3"]
    assert logs.keeper_flags({"log_driver": "journald"}, "web") == ["--log-driver=journald", "--log-pod-name=web"]
    assert logs.keeper_flags({"log_driver": "journald"}, None) == ["--log-driver=journald"]


def test_missing_journald_socket_names_the_option(tmp_path):
    with pytest.raises(ValidationError) as e:
        logs.check_journald(str(tmp_path / "socket"))
    assert e.value.path == "log_driver" and "socket" in str(e.value)
    (tmp_path / "file").write_text("")
    with pytest.raises(ValidationError, match="not a socket"):
        logs.check_journald(str(tmp_path / "file"))


@pytest.fixture
def journal_socket(tmp_path, monkeypatch):
    path = str(tmp_path / "journal.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(path)
    s.settimeout(2)
    monkeypatch.setattr(logsink, "JOURNAL_SOCKET", path)
    yield s
    s.close()


def parse(datagram):
    fields = {}
    for line in datagram.split(b"\n")[:-1]:
        k, dummy_sep, v = line.partition(b"=")
        fields[k.decode()] = v
    assert datagram.endswith(b"\n")
    return fields


def test_journal_writer_sends_one_native_entry_per_line(tmp_path, journal_socket):
    j = logsink.Journal(str(tmp_path / "app.log"), "app", "0123456789abcdef", "web")
    j.feed(b"one\ntwo=2\n\xff\xfebin")
    first, second = parse(journal_socket.recv(1 << 16)), parse(journal_socket.recv(1 << 16))
    assert first == {"MESSAGE": b"one", "PRIORITY": b"6", "SYSLOG_IDENTIFIER": b"web/app",
                     "APPC_POD_UUID": b"0123456789abcdef", "APPC_POD_NAME": b"web", "APPC_APP": b"app"}
    assert second["MESSAGE"] == b"two=2"
    j.close()  # the partial line is flushed at close
    assert parse(journal_socket.recv(1 << 16))["MESSAGE"] == b"\xff\xfebin"
    assert not os.path.exists(tmp_path / "app.log")
    unnamed = logsink.Journal(str(tmp_path / "b.log"), "b", "0123456789abcdef", "")
    unnamed.write(b"x")
    fields = parse(journal_socket.recv(1 << 16))
    assert fields["SYSLOG_IDENTIFIER"] == b"01234567/b" and "APPC_POD_NAME" not in fields
    unnamed.close()


def test_journal_writer_falls_back_to_the_file_and_comes_back(tmp_path, journal_socket, monkeypatch):
    j = logsink.Journal(str(tmp_path / "app.log"), "app", "0123456789abcdef", "web")
    monkeypatch.setattr(logsink, "JOURNAL_SOCKET", str(tmp_path / "nobody"))
    j.write(b"lost?")
    j.write(b"still down")
    text = (tmp_path / "app.log").read_text()
    lines = text.splitlines()
    assert "journald did not take this line" in lines[0] and lines[1].endswith(" lost?"), text
    assert lines[2].endswith(" still down") and len(lines) == 3, text  # no send tried before the retry time
    monkeypatch.setattr(logsink, "JOURNAL_SOCKET", journal_socket.getsockname())
    j.down_until = 0.0
    j.write(b"back")
    assert parse(journal_socket.recv(1 << 16))["MESSAGE"] == b"back"
    j.close()


def test_file_log_rotates_at_max_size_keeping_max_files(tmp_path):
    path = str(tmp_path / "app.log")
    log = logsink.Log(path, max_size=4096, max_files=3)
    for i in range(1000):
        log.write(b"line-%d" % i)
    log.close()
    names = sorted(os.listdir(tmp_path))
    assert names == ["app.log", "app.log.1", "app.log.2"], names
    assert all(os.path.getsize(os.path.join(tmp_path, n)) <= 4096 for n in names)
    with open(path) as f:
        assert f.read().splitlines()[-1].endswith(" line-999")
    one = logsink.Log(str(tmp_path / "one.log"), max_size=4096, max_files=1)
    for i in range(1000):
        one.write(b"line-%d" % i)
    one.close()
    assert not os.path.exists(tmp_path / "one.log.1") and os.path.getsize(tmp_path / "one.log") <= 4096

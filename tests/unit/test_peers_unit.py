"""Pod name resolution between pods on a bridge network (stage1/peers.py), on a fake data
directory: who is listed, the in-place rewrite, and a pod directory turned hostile."""
import fcntl
import os

import pytest

from ansible_collections.appc.rocket.plugins.module_utils.stage1 import peers

UUIDS = ["aaaaaaaa-0000-4000-8000-00000000000%d" % i for i in range(4)]


@pytest.fixture
def dd(tmp_path):
    d = tmp_path / "dd"
    for sub in ("names", "pods/run", "pods/exited-garbage", "net/ipam/back", "net/ipam/front"):
        (d / sub).mkdir(parents=True)
    held = []
    yield d, held
    for fd in held:
        os.close(fd)


def add_pod(dd, i, name, nets, run=True, state="run", aliases=(), ip6=False):
    d, held = dd
    uuid = UUIDS[i]
    pod = d / "pods" / state / uuid
    (pod / "net").mkdir(parents=True)
    (d / "names" / name).write_text(uuid + "\n")
    ip = {}
    for net in nets:
        ip[net] = "10.9.%d.%d" % (["back", "front"].index(net), 10 + i)
        (d / "net" / "ipam" / net / ip[net]).write_text(uuid + "\n")
        if ip6:  # a dual-stack network: an IPv6 allocation file beside the IPv4 one
            (d / "net" / "ipam" / net / ("fd00:9:%d::%x" % (["back", "front"].index(net), 10 + i))).write_text(uuid)
    (pod / "net" / "hosts").write_text("127.0.0.1\tlocalhost\n%s\t%s\n" % (ip[nets[0]], name))
    plan = {"lock": str(d / "net" / "lock"), "networks": [{"name": n, "type": "bridge"} for n in nets],
            "aliases": list(aliases)}
    peers.write_self(str(pod), plan, uuid, "h-" + name)
    if run:  # its keeper's lock
        fd = os.open(str(pod), os.O_RDONLY | os.O_DIRECTORY)
        fcntl.flock(fd, fcntl.LOCK_EX)
        held.append(fd)
    return pod


def hosts(pod):
    return (pod / "net" / "hosts").read_text()


def test_running_peers_are_listed_by_name_and_hostname_per_shared_network(dd):
    a = add_pod(dd, 0, "alpha", ["back"])
    b = add_pod(dd, 1, "beta", ["back", "front"])
    c = add_pod(dd, 2, "gamma", ["front"])
    exited = add_pod(dd, 3, "delta", ["back"], run=False)  # in pods/run, nobody holds its lock
    ino = os.stat(a / "net" / "hosts").st_ino
    assert peers.refresh(str(dd[0]), ["back", "front"]) == []
    assert hosts(a).endswith(peers.HEADER + "10.9.0.11\tbeta h-beta\n")
    assert "alpha" not in hosts(a).split(peers.HEADER)[1]
    assert hosts(b).split(peers.HEADER)[1] == "10.9.0.10\talpha h-alpha\n10.9.1.12\tgamma h-gamma\n"
    assert hosts(c).split(peers.HEADER)[1] == "10.9.1.11\tbeta h-beta\n"
    assert peers.HEADER not in hosts(exited)
    assert os.stat(a / "net" / "hosts").st_ino == ino  # in place: the apps' bind mount sees it
    # beta goes (its teardown): the others lose its line, the file keeps its size (padding)
    size = os.stat(a / "net" / "hosts").st_size
    assert peers.refresh(str(dd[0]), ["back", "front"], exclude=UUIDS[1]) == []
    assert "beta" not in hosts(a) and "beta" not in hosts(c)
    assert os.stat(a / "net" / "hosts").st_size == size
    assert hosts(a).startswith("127.0.0.1\tlocalhost\n10.9.0.10\talpha\n#")
    assert hosts(a).rstrip(" \n").endswith("#")  # only a comment line of padding is left
    assert peers.refresh(str(dd[0]), ["back"], exclude=UUIDS[1]) == []  # nothing changes: no write


def test_a_symlink_hard_link_or_fifo_in_place_of_hosts_is_refused(dd, tmp_path):
    a = add_pod(dd, 0, "alpha", ["back"])
    add_pod(dd, 1, "beta", ["back"])
    victim = tmp_path / "host-file"
    victim.write_text("the host's\n")
    hosts_path = a / "net" / "hosts"
    for make in ("symlink", "hardlink", "fifo", "dir-symlink"):
        if make == "dir-symlink":
            os.rename(a / "net", a / "net.real")
            os.symlink(str(tmp_path), str(a / "net"))
            (tmp_path / "hosts").symlink_to(victim)
        else:
            os.unlink(hosts_path)
            if make == "symlink":
                os.symlink(str(victim), str(hosts_path))
            elif make == "hardlink":
                os.link(str(victim), str(hosts_path))
            else:
                os.mkfifo(str(hosts_path))
        errors = peers.refresh(str(dd[0]), ["back"])
        if make == "dir-symlink":  # its peer file is not reached either: the pod is skipped
            assert errors == [], errors
        else:
            assert len(errors) == 1 and errors[0].startswith("pod %s:" % UUIDS[0]), (make, errors)
        assert victim.read_text() == "the host's\n", make
        if make == "dir-symlink":
            os.unlink(str(a / "net"))
            os.rename(a / "net.real", a / "net")
    # put right, the pair resolves each other again
    os.unlink(hosts_path)
    hosts_path.write_text("")
    assert peers.refresh(str(dd[0]), ["back"]) == []
    assert "beta" in hosts(a) and "alpha" in (dd[0] / "pods" / "run" / UUIDS[1] / "net" / "hosts").read_text()


def test_names_read_back_are_checked_before_they_reach_another_pod(dd):
    a = add_pod(dd, 0, "alpha", ["back"])
    b = add_pod(dd, 1, "beta", ["back"])
    (b / "net" / peers.PEER).write_text("names beta\n10.0.0.1\tevil x\nnet back\n")
    (dd[0] / "net" / "ipam" / "back" / "not-an-ip").write_text(UUIDS[1])
    assert peers.refresh(str(dd[0]), ["back"]) == []
    assert hosts(a).split(peers.HEADER)[1] == "10.9.0.11\tbeta\n"
    assert not peers._valid_name("a\nb") and not peers._valid_name("-x") and peers._valid_name("web-1.example")


def test_peers_lines_carry_aliases_and_ipv6_addresses(dd):
    """hostname_aliases reach the peers' files, and a dual-stack peer has a line per family
    (IPv4 first); a hostile alias or a file name that is no address is skipped."""
    a = add_pod(dd, 0, "alpha", ["back"], aliases=("www", "api-v1", "-bad"), ip6=True)
    b = add_pod(dd, 1, "beta", ["back"], ip6=True)
    (dd[0] / "net" / "ipam" / "back" / "last6").write_text("fd00:9:0::b")
    (dd[0] / "net" / "ipam" / "back" / "fd00::zz").write_text(UUIDS[0])
    assert peers.refresh(str(dd[0]), ["back"]) == []
    assert hosts(b).split(peers.HEADER)[1] == ("10.9.0.10\talpha h-alpha www api-v1\n"
                                               "fd00:9:0::a\talpha h-alpha www api-v1\n")
    assert hosts(a).split(peers.HEADER)[1] == "10.9.0.11\tbeta h-beta\nfd00:9:0::b\tbeta h-beta\n"

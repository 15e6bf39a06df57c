"""Issue 13, finding 3: the default capability set (podman's), ping without CAP_NET_RAW,
and the escape hatches (cap_add/cap_drop as appc capability isolators).

Root only. A static probe tries what a root app would use to read other pods' traffic on
the host's interfaces (an AF_PACKET socket, a raw IP socket) and to make a device node,
and prints name=errno (0: success).
"""
import errno
import json
import os

import pytest

from tests.support import stage1_harness as h

PROBE_C = r'''
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <linux/if_ether.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>
static void say(const char *what, int r) { printf("%s=%d\n", what, r < 0 ? errno : 0); }
int main(void) {
    int s;
    errno = 0; s = socket(AF_PACKET, SOCK_RAW, htons(ETH_P_ALL)); say("packet", s); if (s >= 0) close(s);
    errno = 0; s = socket(AF_INET, SOCK_RAW, IPPROTO_ICMP); say("raw", s); if (s >= 0) close(s);
    errno = 0; s = socket(AF_INET, SOCK_DGRAM, IPPROTO_ICMP); say("ping", s); if (s >= 0) close(s);
    errno = 0; s = mknod("/tmp/null", S_IFCHR | 0600, makedev(1, 3)); say("mknod", s);
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, "CapBnd:", 7)) printf("CapBnd=%s", line + 8);
    fflush(stdout);
    return 0;
}
'''


@pytest.fixture(scope="session")
def probe(tmp_path_factory):
    return h.static_binary(tmp_path_factory, "capprobe", PROBE_C)


def facts(text):
    return dict(line.partition("=")[::2] for line in text.splitlines() if "=" in line)


def report(pod, app="a"):
    with open(os.path.join(pod.dir, "apps", app, "isolation.json")) as f:
        return json.load(f)


def bit(name):
    from ansible_collections.appc.rocket.plugins.module_utils.stage1.linux import CAP_NUMBERS
    return 1 << CAP_NUMBERS[name]


@pytest.mark.parametrize("net", ["host", "none"])
def test_a_default_root_app_cannot_sniff_the_hosts_traffic_or_make_nodes(pod, probe, net):
    # The attack: a root app of a default pod with the host's network opens an AF_PACKET
    # socket (every frame on every interface, loopback included: other pods' traffic) or a
    # raw IP socket. Without CAP_NET_RAW both are refused; without CAP_MKNOD so is mknod.
    pod.add_app("a", ["/probe"], files={"/probe": probe})
    r = pod.run(flags=["--net=" + net])
    assert r.rc == 0, r
    f = facts(r.stdout)
    assert f["packet"] == str(errno.EPERM), r
    assert f["raw"] == str(errno.EPERM), r
    assert f["mknod"] == str(errno.EPERM), r
    bnd = int(f["CapBnd"], 16)
    assert not bnd & (bit("CAP_NET_RAW") | bit("CAP_MKNOD") | bit("CAP_AUDIT_WRITE")), r
    assert bnd & bit("CAP_NET_BIND_SERVICE") and bnd & bit("CAP_CHOWN"), r
    if net != "host":
        # ping keeps working: ICMP datagram sockets, allowed for every group in the pod's
        # own network namespace (net.ipv4.ping_group_range, as podman sets it).
        assert f["ping"] == "0", r
        assert report(pod)["sysctls"].get("net.ipv4.ping_group_range") is None  # not the app's ask


def test_ping_group_range_is_set_in_the_pods_namespace_only(pod):
    with open("/proc/sys/net/ipv4/ping_group_range") as fh:
        host = fh.read()
    pod.add_app("a", ["/bin/sh", "-c", "echo RANGE=$(cat /proc/sys/net/ipv4/ping_group_range)"])
    r = pod.run(flags=["--net=none"])
    assert r.rc == 0, r
    assert facts(r.stdout)["RANGE"].split() == ["0", "2147483647"], r
    with open("/proc/sys/net/ipv4/ping_group_range") as fh:
        assert fh.read() == host


def test_an_explicit_ping_group_range_wins(pod):
    pod.add_app("a", ["/bin/sh", "-c", "echo RANGE=$(cat /proc/sys/net/ipv4/ping_group_range)"],
                isolators=[{"name": "os/unix/sysctl", "value": {"net.ipv4.ping_group_range": "1 0"}}])
    r = pod.run(flags=["--net=none"])
    assert r.rc == 0, r
    assert facts(r.stdout)["RANGE"].split() == ["1", "0"], r


@pytest.mark.parametrize("net", ["none", "host"])
def test_a_retain_set_gives_back_net_raw(pod, probe, net):
    # CAP_NET_BIND_SERVICE keeps a root app on the host's network in the host's user
    # namespace; with its own network the app is in the pod's user namespace (finding 6),
    # where the kernel refuses every device node whatever CAP_MKNOD says.
    pod.add_app("a", ["/probe"], files={"/probe": probe},
                isolators=[{"name": "os/linux/capabilities-retain-set",
                            "value": {"set": ["CAP_NET_RAW", "CAP_MKNOD", "CAP_NET_BIND_SERVICE"]}}])
    r = pod.run(flags=["--net=%s" % net])
    assert r.rc == 0, r
    f = facts(r.stdout)
    assert f["packet"] == "0" and f["raw"] == "0", r
    assert f["mknod"] == ("0" if net == "host" else str(errno.EPERM)), r


@pytest.mark.parametrize("retain", [None, ["CAP_NET_RAW"]])
def test_busybox_ping_needs_net_raw(pod, retain):
    # Debian's busybox 1.35 ping opens only a raw socket: it fails without CAP_NET_RAW even
    # where ICMP datagram sockets are allowed (documented; iputils' ping uses those).
    isolators = [{"name": "os/linux/capabilities-retain-set", "value": {"set": retain}}] if retain else []
    pod.add_app("a", ["/bin/sh", "-c", "ping -c 1 -W 2 127.0.0.1 2>&1; echo PING=$?"], isolators=isolators)
    r = pod.run(flags=["--net=none"])
    assert r.rc == 0, r
    if retain:
        assert facts(r.stdout)["PING"] == "0", r
    else:
        assert facts(r.stdout)["PING"] == "1" and "permission denied" in r.stdout, r


# --------------------------------------------------------------------------- the modules

from tests.support import pods  # noqa: E402
from ansible_collections.appc.rocket.plugins.module_utils.stage0.store import Store  # noqa: E402


def test_pod_run_cap_add_cap_drop_compare_report_and_refuse_unknown_names(tmp_path):
    from tests.support.ansible_run import module

    dd = str(tmp_path / "rocket")
    with Store(dd) as s:
        s.import_file(pods.busybox_aci(tmp_path))
    args = {"name": "caps", "image": "example.com/busybox", "net": "none", "data_dir": dd, "state": "exited",
            "exec": ["/bin/sh", "-c", "grep CapBnd /proc/self/status"], "cap_add": ["net_raw"],
            "cap_drop": ["CAP_KILL"]}
    try:
        r = module("pod_run", args)
        assert r["changed"] is True and not r.get("failed"), r
        iso_ = r["pod"]["apps"][0]["isolation"]
        assert "CAP_NET_RAW" in iso_["capabilities"] and "CAP_KILL" not in iso_["capabilities"], iso_
        assert "os/linux/capabilities-retain-set" in iso_["enforced"], iso_
        bnd = int(r["pod"]["apps"][0]["log"].split()[-1], 16)
        assert bnd & bit("CAP_NET_RAW") and not bnd & bit("CAP_KILL"), r["pod"]["apps"][0]["log"]
        # the same names, spelled otherwise: nothing to do
        r = module("pod_run", dict(args, cap_add=["CAP_NET_RAW"], cap_drop=["kill"]))
        assert r["changed"] is False, r
        # drop only: a remove-set; the pod is replaced and --diff names the fields
        r = module("pod_run", dict(args, cap_add=[], cap_drop=["SETUID"]), diff=True)
        assert r["changed"] is True and r["action"] == "replace", r
        assert "apps[0].cap_add" in " ".join(r["reasons"]), r
        assert r["diff"]["before"]["apps[0].cap_add"] == ["CAP_NET_RAW"], r["diff"]
        assert r["diff"]["after"]["apps[0].cap_drop"] == ["CAP_SETUID"], r["diff"]
        iso_ = r["pod"]["apps"][0]["isolation"]
        assert "os/linux/capabilities-remove-set" in iso_["enforced"], iso_
        assert "CAP_SETUID" not in iso_["capabilities"] and "CAP_NET_RAW" not in iso_["capabilities"], iso_
        # unknown names fail before a pod exists, naming the option
        r = module("pod_run", dict(args, name="bad", cap_add=["NET_RWA"]))
        assert r.get("failed") and "cap_add[0]" in r["msg"] and "NET_RWA" in r["msg"], r
        r = module("pod_run", dict(args, name="bad", cap_add=[], cap_drop=["ALL"],
                                   isolators=[{"name": "os/linux/capabilities-remove-set",
                                               "value": {"set": ["CAP_KILL"]}}]))
        assert r.get("failed") and "cap_drop" in r["msg"] and "give one" in r["msg"], r
        assert [p["name"] for p in module("pod_info", {"data_dir": dd})["pods"]] == ["caps"]
        # a pod of its own user namespace: the range is written from inside it (every group
        # the namespace maps; from the host's namespace its gids, from 2^31, cannot be named)
        r = module("pod_run", dict(args, name="pinger", cap_add=[], cap_drop=[], private_users=True,
                                   exec=["/bin/cat", "/proc/sys/net/ipv4/ping_group_range"]))
        assert not r.get("failed"), r
        assert r["pod"]["apps"][0]["log"].split()[-2:] == ["0", "65535"], r["pod"]["apps"][0]
    finally:
        for p in module("pod_info", {"data_dir": dd})["pods"]:
            module("pod_run", {"uuid": p["uuid"], "state": "absent", "data_dir": dd})


# --------------------------------------------------------------------------- privileged

PRIV_PROBE_C = r'''
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>
static void say(const char *what, int r) { printf("%s=%d\n", what, r < 0 ? errno : 0); }
int main(void) {
    int r, fd;
    char c = 1;
    errno = 0; r = mknod("/dev/zero2", S_IFCHR | 0600, makedev(1, 5)); say("mknod_chr", r);
    errno = 0; fd = open("/dev/zero2", O_RDONLY); say("open_chr", fd);
    if (fd >= 0) { r = read(fd, &c, 1); printf("read_chr=%d:%d\n", r, c); close(fd); }
    errno = 0; r = mknod("/dev/loop0", S_IFBLK | 0600, makedev(7, 0)); say("mknod_blk", r);
    errno = 0; fd = open("/dev/loop0", O_RDONLY); say("open_blk", fd); if (fd >= 0) close(fd);
    errno = 0; fd = open("/proc/sys/kernel/hostname", O_WRONLY); say("proc_sys_w", fd); if (fd >= 0) close(fd);
    struct stat st;
    errno = 0; r = stat("/proc/timer_list", &st); printf("masked=%d\n", r == 0 && S_ISCHR(st.st_mode));
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    while (f && fgets(line, sizeof line, f)) {
        if (!strncmp(line, "CapBnd:", 7)) printf("CapBnd=%s", line + 8);
        if (!strncmp(line, "CapEff:", 7)) printf("CapEff=%s", line + 8);
        if (!strncmp(line, "Seccomp:", 8)) printf("Seccomp=%s", line + 9);
    }
    fflush(stdout);
    return 0;
}
'''


def host_bounding():
    """The test's own bounding set: all 41 capabilities on a full host (a container running
    the tests may lack some, and a privileged pod cannot get more than stage1 has)."""
    with open("/proc/self/status") as fh:
        return int([ln for ln in fh if ln.startswith("CapBnd:")][0].split()[1], 16)


@pytest.fixture(scope="session")
def priv_probe(tmp_path_factory):
    return h.static_binary(tmp_path_factory, "privprobe", PRIV_PROBE_C)


@pytest.mark.parametrize("privileged", [True, False])
def test_a_privileged_pod_has_every_capability_no_seccomp_and_the_devices(pod, priv_probe, privileged):
    # What docker's --privileged gives a root app, and what a default pod's root app is denied.
    from ansible_collections.appc.rocket.plugins.module_utils.stage1 import contract

    pod.add_app("a", ["/probe"], files={"/probe": priv_probe})
    if privileged:
        pod.annotations = [{"name": contract.PRIVILEGED_ANNOTATION, "value": "true"}]
    r = pod.run(flags=["--net=none"])
    assert r.rc == 0, r
    f = facts(r.stdout)
    every = host_bounding()
    if privileged:
        assert int(f["CapBnd"], 16) == every and int(f["CapEff"], 16) == every, r
        assert f["Seccomp"].strip() == "0", r
        assert f["mknod_chr"] == "0" and f["open_chr"] == "0" and f["read_chr"] == "1:0", r
        assert f["mknod_blk"] == "0" and f["open_blk"] == "0", r
        assert f["proc_sys_w"] == "0" and f["masked"] == "0", r
        rep = report(pod)
        assert rep["privileged"] is True and rep["seccomp"] is None, rep
        assert len(rep["capabilities"]) == bin(every).count("1"), rep
        assert any("privileged" in n for n in rep["notes"]), rep
    else:
        assert int(f["CapBnd"], 16) != every and f["Seccomp"].strip() == "2", r
        assert f["mknod_chr"] == str(errno.EPERM) and f["mknod_blk"] == str(errno.EPERM), r
        assert f["proc_sys_w"] == str(errno.EROFS) and f["masked"] == "1", r
        assert report(pod)["privileged"] is False


def test_a_privileged_app_stays_in_the_hosts_user_namespace(pod):
    from ansible_collections.appc.rocket.plugins.module_utils.stage1 import contract

    pod.add_app("a", ["/bin/sh", "-c", "echo NS=$(readlink /proc/self/ns/user)"])
    pod.annotations = [{"name": contract.PRIVILEGED_ANNOTATION, "value": "true"}]
    r = pod.run(flags=["--net=none"])
    assert r.rc == 0, r
    assert facts(r.stdout)["NS"] == os.readlink("/proc/self/ns/user"), r


def test_pod_run_privileged_compares_reports_and_refuses_cap_drop(tmp_path):
    from tests.support.ansible_run import module

    dd = str(tmp_path / "rocket")
    with Store(dd) as s:
        s.import_file(pods.busybox_aci(tmp_path))
    args = {"name": "priv", "image": "example.com/busybox", "net": "none", "data_dir": dd, "state": "exited",
            "exec": ["/bin/sh", "-c", "grep CapEff /proc/self/status"], "privileged": True}
    try:
        r = module("pod_run", args)
        assert r["changed"] is True and not r.get("failed"), r
        iso_ = r["pod"]["apps"][0]["isolation"]
        assert iso_["privileged"] is True and len(iso_["capabilities"]) == bin(host_bounding()).count("1"), iso_
        assert int(r["pod"]["apps"][0]["log"].split()[-1], 16) == host_bounding(), r["pod"]["apps"][0]["log"]
        r = module("pod_run", args)
        assert r["changed"] is False, r
        r = module("pod_run", dict(args, privileged=False), diff=True)
        assert r["changed"] is True and r["action"] == "replace", r
        assert r["diff"]["before"]["privileged"] is True and r["diff"]["after"]["privileged"] is False, r["diff"]
        assert r["pod"]["apps"][0]["isolation"]["privileged"] is False
        r = module("pod_run", dict(args, name="bad", cap_drop=["NET_RAW"]))
        assert r.get("failed") and "cap_drop" in r["msg"] and "privileged" in r["msg"], r
        r = module("pod_run", dict(args, name="bad", isolators=[{"name": "os/linux/seccomp-remove-set",
                                                                 "value": {"set": ["@rkt/default-blacklist"]}}]))
        assert r.get("failed") and "seccomp" in r["msg"] and "privileged" in r["msg"], r
        r = module("pod_run", dict(args, name="bad", privileged=False,
                                   annotations={"appc.rocket/privileged": "true"}))
        assert r.get("failed") and "appc.rocket/privileged" in r["msg"], r
        assert [p["name"] for p in module("pod_info", {"data_dir": dd})["pods"]] == ["priv"]
    finally:
        for p in module("pod_info", {"data_dir": dd})["pods"]:
            module("pod_run", {"uuid": p["uuid"], "state": "absent", "data_dir": dd})

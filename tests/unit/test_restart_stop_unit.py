"""Restart rules and stop signals without pods: option checks, the keeper's rules, the
restore's rule (docker's), signal names, and comparison of pods recorded before them."""
import signal

import pytest

from ansible_collections.appc.rocket.plugins.module_utils.stage0 import oci, podspec, restart, stopping
from ansible_collections.appc.rocket.plugins.module_utils.stage0.errors import ImageError, ValidationError
from ansible_collections.appc.rocket.plugins.module_utils.stage1 import keeping
from ansible_collections.appc.rocket.plugins.module_utils.stage1 import pod as s1pod


def test_restart_options_normalize_as_docker_spells_them():
    assert restart.normalize("on-failure:3") == {"restart_policy": "on-failure", "restart_retries": 3,
                                                 "restart_delay": 1.0, "restart_max_delay": 60.0}
    assert restart.normalize("on-failure", 3) == restart.normalize("on-failure:3", 3)
    assert restart.normalize("unless-stopped", None, "0.5", 2)["restart_max_delay"] == 2.0
    assert restart.normalize(None)["restart_policy"] == "no"


@pytest.mark.parametrize("args, option", [
    (("sometimes",), "restart_policy"),
    (("always:3",), "restart_policy"),
    (("on-failure:x",), "restart_policy"),
    (("on-failure:-1",), "restart_policy"),
    ((5,), "restart_policy"),
    (("always", 3), "restart_retries"),
    (("on-failure:2", 3), "restart_retries"),
    (("on-failure", -1), "restart_retries"),
    (("on-failure", True), "restart_retries"),
    (("always", None, "soon"), "restart_delay"),
    (("always", None, -1), "restart_delay"),
    (("always", None, 5, 2), "restart_max_delay"),
    (("always", None, None, float("nan")), "restart_max_delay"),
])
def test_bad_restart_options_name_the_option(args, option):
    with pytest.raises(ValidationError) as e:
        restart.normalize(*args)
    assert e.value.path == option and str(e.value).startswith(option + ":")


def test_keeper_rules_retries_and_backoff():
    r = keeping.Rules()
    for a in restart.keeper_flags({"restart_policy": "on-failure:2", "restart_delay": 0.5,
                                   "restart_max_delay": 3}) + ["--restarts=4"]:
        assert r.parse(a)
    assert not r.parse("--net=none")
    assert (r.policy, r.retries, r.delay, r.max_delay, r.restarts) == ("on-failure", 2, 0.5, 3.0, 4)
    assert r.again(1, 0) and r.again(1, 1) and not r.again(1, 2) and not r.again(0, 0)
    waits, last = [], 0.0
    for dummy in range(5):
        last = r.backoff(last, 0.1)
        waits.append(last)
    assert waits == [0.5, 1.0, 2.0, 3.0, 3.0]
    assert r.backoff(3.0, 11) == 0.5  # a run that lasted: start over
    for policy in ("always", "unless-stopped"):
        r.policy = policy
        assert r.again(0, 100) and r.again(1, 100)
    r.policy = "no"
    assert not r.again(1, 0)


@pytest.mark.parametrize("policy, by_user, last, restarts, retries, comes_back", [
    ("no", False, 1, 0, 0, False),
    ("always", True, 0, 0, 0, True),            # docker: always comes back at a daemon restart
    ("unless-stopped", True, 0, 0, 0, False),
    ("unless-stopped", False, 0, 0, 0, True),
    ("on-failure", False, 0, 0, 0, False),
    ("on-failure", False, 3, 0, 0, True),
    ("on-failure", False, None, 0, 0, True),    # the keeper died before the exit was recorded
    ("on-failure", True, 3, 0, 0, False),
    ("on-failure", False, 3, 2, 2, False),      # retries used up
    ("on-failure", False, 3, 1, 2, True),
])
def test_the_restore_rule_is_dockers(policy, by_user, last, restarts, retries, comes_back):
    assert (restart.wants_to_run(policy, by_user, last, restarts, retries) is not None) == comes_back


@pytest.mark.parametrize("given, name", [
    ("SIGTERM", "SIGTERM"), ("term", "SIGTERM"), ("15", "SIGTERM"), (3, "SIGQUIT"), ("QUIT", "SIGQUIT"),
    ("SIGRTMIN+3", "SIGRTMIN+3"), ("RTMIN", "SIGRTMIN"), (str(signal.SIGRTMIN + 2), "SIGRTMIN+2"),
    ("SIGKILL", "SIGKILL"), ("sigusr1", "SIGUSR1"),
])
def test_signal_names(given, name):
    assert stopping.parse_signal(given) == name
    assert stopping.signal_number(name) == (int(given) if str(given).isdigit() else stopping.signal_number(name))


@pytest.mark.parametrize("given", ["SIGSTOP", "TSTP", "0", "99", "SIGNOPE", "", "SIGRTMIN+x", True, 1.5, "KILL+1"])
def test_not_signals(given):
    assert stopping.parse_signal(given) is None


@pytest.mark.parametrize("app, field", [
    ({"stop_signal": "SIGSTOP"}, "apps[0].stop_signal"),
    ({"stop_signal": "NOPE"}, "apps[0].stop_signal"),
    ({"stop_timeout": -1}, "apps[0].stop_timeout"),
    ({"stop_timeout": "soon"}, "apps[0].stop_timeout"),
    ({"stop_timeout": True}, "apps[0].stop_timeout"),
    ({"annotations": {"rocket/stop-signal": "9"}}, "apps[0].annotations"),
])
def test_bad_stop_options_name_the_field(app, field):
    with pytest.raises(ValidationError) as e:
        podspec.normalize_spec({"apps": [dict({"image": "example.com/busybox"}, **app)]})
    assert e.value.path == field


def test_stop_options_compare_and_old_pods_see_no_difference():
    old = podspec.normalize_spec({"apps": ["example.com/busybox"]})
    for a in old["apps"]:
        del a["stop_signal"], a["stop_timeout"]  # a spec.json written before the options existed
    assert podspec.differences(podspec.normalize_spec({"apps": ["example.com/busybox"]}), old) == []
    new = podspec.normalize_spec({"apps": [{"image": "example.com/busybox", "stop_signal": "quit",
                                            "stop_timeout": 2.5}]})
    assert new["apps"][0]["stop_signal"] == "SIGQUIT" and new["apps"][0]["stop_timeout"] == 2.5
    assert {d["field"] for d in podspec.differences(new, old)} == {"apps[0].stop_signal", "apps[0].stop_timeout"}
    same = podspec.normalize_spec({"apps": [{"image": "example.com/busybox", "stop_signal": "3",
                                             "stop_timeout": "2.5"}]})
    assert podspec.differences(same, new) == []


def test_prepare_annotations_the_option_wins_over_the_image_and_stage1_reads_them():
    image = {"annotations": [{"name": "appc.rocket/oci/stop-signal", "value": "SIGQUIT"}]}
    ann = stopping.annotations({"name": "a", "stop_signal": None, "stop_timeout": None}, image)
    assert ann == {"rocket/stop-signal": str(int(signal.SIGQUIT))}
    ann = stopping.annotations({"name": "a", "stop_signal": "SIGUSR2", "stop_timeout": 4}, image)
    assert ann == {"rocket/stop-signal": str(int(signal.SIGUSR2)), "rocket/stop-timeout": "4"}
    assert stopping.annotations({"name": "a"}, {}) == {}
    pod_app = {"annotations": [{"name": k, "value": v} for k, v in ann.items()]}
    assert s1pod.stop_settings(pod_app) == (int(signal.SIGUSR2), 4.0)
    assert s1pod.stop_settings({}) == (15, None)
    assert stopping.app_stop(pod_app) == {"signal": "SIGUSR2", "timeout": 4.0}
    with pytest.raises(ImageError, match="StopSignal 'SIGNOPE'.*give stop_signal"):
        stopping.annotations({"name": "a"}, {"annotations": [{"name": "appc.rocket/oci/stop-signal",
                                                              "value": "SIGNOPE"}]})


def test_oci_stop_signal_is_kept_and_no_longer_dropped():
    m, dropped = oci.image_manifest({"config": {"Cmd": ["/bin/sh"], "StopSignal": "SIGQUIT"}},
                                    "example.com/x", {"version": "1"})
    assert {"name": "appc.rocket/oci/stop-signal", "value": "SIGQUIT"} in m["annotations"]
    assert not [d for d in dropped if "StopSignal" in d]


def test_stopping_mark_carries_the_pods_timeout():
    from ansible_collections.appc.rocket.plugins.module_utils.stage1 import pid1

    assert stopping.mark(7) == "timeout=7.0\n"
    assert pid1.stop_timeout("/nonexistent") == 10.0


@pytest.mark.parametrize("policy, by_user, last, boot, by_host, comes_back", [
    ("no", False, None, True, False, True),      # boot: true, running at a power cut (no exit recorded)
    ("no", False, 0, True, False, False),        # boot: true, but it exited on its own before
    ("no", True, 143, True, False, False),       # boot: true, but the user stopped it
    ("no", False, 143, True, True, True),        # boot: true, a shutdown stopped it
    ("no", False, 143, False, True, False),      # policy no without boot: never
    ("no", False, None, False, False, False),
    ("on-failure", False, 0, False, True, True),  # a shutdown interrupted it: not a success of its own
    ("unless-stopped", False, 0, False, True, True),
    ("unless-stopped", True, 0, True, True, False),  # a user's stop wins over boot
])
def test_boot_and_the_hosts_stop(policy, by_user, last, boot, by_host, comes_back):
    assert (restart.wants_to_run(policy, by_user, last, 0, 0, boot, by_host) is not None) == comes_back

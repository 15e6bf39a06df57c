"""The pod's host and domain names (stage0/uts.py): what reaches the kernel, the pod's
/etc/hosts and its peers' files is a name, nothing else, refused naming the option."""
import pytest

from ansible_collections.appc.rocket.plugins.module_utils.stage0 import run, uts
from ansible_collections.appc.rocket.plugins.module_utils.stage0.errors import ValidationError


@pytest.mark.parametrize("name", ["web", "web-1.example.com", "db_2", "a" * 63, "x." * 31 + "ab", "host."])
def test_names_that_pass(name):
    assert uts.check_name(name, "hostname") == name


@pytest.mark.parametrize("value,why", [
    ("", "not a host name"), ("a b", "not a host name"), ("a\n10.0.0.1 evil", "not a host name"),
    ("-web", "not a host name"), ("a..b", "not a host name"), ("a" * 64, "not a host name"),
    ("é", "not a host name"), (5, "not a host name"), ([], "not a host name"),
    ("a." * 32 + "b", "is 65 characters long; the kernel takes at most 64"),
])
def test_names_that_are_refused(value, why):
    with pytest.raises(ValidationError, match="domainname.*" + why):
        uts.normalize(None, value)


def test_normalize_keeps_only_what_was_given_and_names_the_option():
    assert uts.normalize(None, None) == {}
    assert uts.normalize("web", "corp") == {"hostname": "web", "domainname": "corp"}
    with pytest.raises(ValidationError, match="^hostname"):
        uts.normalize("bad name", "corp")
    # a name in /etc/hosts (netconf: aliases, search domains) may be longer than the kernel's
    assert uts.check_name("a." * 100 + "b", "alias", 253)
    with pytest.raises(ValidationError, match="at most 253"):
        uts.check_name("a." * 127, "alias", 253)


def test_the_flags_carry_both_names_and_refuse_bad_ones_before_any_claim():
    assert run._flags("none", False, False, "web", None, "corp") == ["--net=none", "--hostname=web", "--domainname=corp"]
    assert run._flags("host", False, False, None) == ["--net=host"]
    with pytest.raises(ValidationError, match="hostname"):
        run._flags("none", False, False, "a\nb")

"""Fuzzing the registry wire's parsers with hypothesis: references, WWW-Authenticate challenges,
registries.conf and auth files. Whatever the input, a result or a RocketError naming the source;
a reference that parses prints back to itself. Budgets scale with ROCKET_FUZZ_SCALE like
test_fuzz.py's (the ``long`` profile is 50 times more)."""
import base64
import json
import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ansible_collections.appc.rocket.plugins.module_utils.stage0 import registries_conf as rc
from ansible_collections.appc.rocket.plugins.module_utils.stage0 import registry_auth as ra
from ansible_collections.appc.rocket.plugins.module_utils.stage0 import registry_ref as rr
from ansible_collections.appc.rocket.plugins.module_utils.stage0.errors import RocketError

SCALE = float(os.environ.get("ROCKET_FUZZ_SCALE", "1")) * (50 if os.environ.get("ROCKET_FUZZ_PROFILE") == "long" else 1)


def budget(n):
    return settings(max_examples=max(1, int(n * SCALE)), deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


REF_CHARS = "abcXYZ019._-/:@[]" + "sha256" + "\u00e9 "


@budget(400)
@given(st.text(alphabet=REF_CHARS, max_size=80) | st.text(max_size=40))
def test_reference(text):
    try:
        ref = rr.parse_reference("docker://" + text)
    except RocketError:
        return
    assert rr.parse_reference(ref.uri()) == ref
    assert ref.repository and "/" not in ref.registry


@budget(400)
@given(st.text(alphabet='BbearerBasic realm="=, \\\t;x/', max_size=60))
def test_challenges(header):
    for ch in ra.parse_challenges(header):
        assert ch.scheme and isinstance(ch.params, dict)


@budget(400)
@given(st.text(alphabet='[]."=#\n\'axyz:0-9 truefalse*/,\\', max_size=120))
def test_registries_conf(text):
    try:
        conf = rc.parse_registries_conf(text, "f.conf")
    except RocketError as e:
        assert "f.conf" in str(e)
        return
    for entry in conf.registries:
        assert entry.prefix


JSONISH = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=12),
                       lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=3),
                       max_leaves=8)


@budget(200)
@given(auths=st.dictionaries(st.sampled_from(["r.example", "https://r.example/v1/", "r.example/team", "x"]),
                             JSONISH | st.fixed_dictionaries({"auth": st.text(max_size=20) | st.just(
                                 base64.b64encode(b"u:p").decode())}), max_size=3),
       extra=JSONISH)
def test_auth_files(tmp_path_factory, auths, extra):
    path = tmp_path_factory.mktemp("auth") / "auth.json"
    path.write_text(json.dumps({"auths": auths, "extra": extra}))
    try:
        creds = ra.find_credentials("r.example", "team/app", auth_file=str(path))
    except RocketError as e:
        assert str(path) in str(e)
        return
    assert creds is None or (creds.username and creds.source == str(path))

"""registry_pull without a registry: policies, options, trust rules, manifest checks, app names."""
import pytest

from ansible_collections.appc.rocket.plugins.module_utils.stage0 import podspec, registry_pull
from ansible_collections.appc.rocket.plugins.module_utils.stage0.errors import (
    ImageError, NotFoundError, ValidationError)
from ansible_collections.appc.rocket.plugins.module_utils.stage0.store import Store

PIN = "sha256:" + "ab" * 32


def test_policies_and_podman_aliases():
    assert [registry_pull.policy(p) for p in ("never", "new", "update", "missing", "always")] == \
        ["never", "new", "update", "new", "update"]
    with pytest.raises(ValidationError, match="pull"):
        registry_pull.policy("sometimes")


def test_options_are_checked_naming_the_option():
    with pytest.raises(ValidationError, match="^digest"):
        registry_pull.Options(digest="sha256:short")
    with pytest.raises(ValidationError, match="^platform"):
        registry_pull.Options(platform="linux")
    assert registry_pull.Options(platform="linux/arm/v7").platform == ("linux", "arm", "v7")
    assert registry_pull.Options().platform[0] == "linux"


@pytest.mark.parametrize("rule", ["127.0.0.1:5000", "127.0.0.1:5000/team", "127.0.0.1:5000/team/app"])
def test_require_digest_refuses_unpinned_references_it_covers(rule):
    ref = registry_pull.parse("docker://127.0.0.1:5000/team/app:1")
    with pytest.raises(ImageError, match="require_digest"):
        registry_pull._trust(ref, registry_pull.Options(require_digest=[rule]))
    assert "pinned" in registry_pull._trust(ref, registry_pull.Options(require_digest=[rule], digest=PIN))
    pinned = registry_pull.parse("docker://127.0.0.1:5000/team/app@" + PIN)
    assert "pinned" in registry_pull._trust(pinned, registry_pull.Options(require_digest=[rule]))


def test_require_digest_leaves_other_registries_and_lookalike_prefixes_alone():
    opts = registry_pull.Options(require_digest=["127.0.0.1:5000/team"])
    for text in ("docker://127.0.0.1:5001/team/app:1", "docker://127.0.0.1:5000/teams/app:1", "docker://nginx"):
        assert registry_pull._trust(registry_pull.parse(text), opts) == registry_pull.NOT_VERIFIED


def test_a_pin_that_contradicts_the_reference_is_refused():
    ref = registry_pull.parse("docker://127.0.0.1:5000/app@" + PIN)
    with pytest.raises(ValidationError, match="^digest"):
        registry_pull._trust(ref, registry_pull.Options(digest="sha256:" + "cd" * 32))


def _resolved(manifest):
    r = registry_pull._Resolved()
    r.manifest = manifest
    return r


def _layer(**kw):
    return dict({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": PIN, "size": 10}, **kw)


@pytest.mark.parametrize("layer,why", [
    (_layer(urls=["https://example.com/l"]), "foreign"),
    (_layer(mediaType="application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"), "foreign"),
    (_layer(mediaType="application/x-unknown"), "media type"),
    (_layer(size=-1), "size"),
    (_layer(digest="md5:abc"), "not a sha256 digest"),
])
def test_layers_the_converter_cannot_take_are_refused_before_any_download(layer, why):
    m = {"config": {"digest": PIN, "size": 100}, "layers": [layer]}
    with pytest.raises(ImageError, match=why):
        registry_pull._descriptors(_resolved(m), "docker://h/x:1")


def test_a_huge_config_is_refused():
    m = {"config": {"digest": PIN, "size": registry_pull.MAX_CONFIG + 1}, "layers": []}
    with pytest.raises(ImageError, match="config size"):
        registry_pull._descriptors(_resolved(m), "docker://h/x:1")


def test_default_app_names_of_registry_references():
    assert podspec.app_name_from_image("docker://127.0.0.1:5000/org/web:1.2@" + PIN) == "web"
    assert podspec.app_name_from_image("docker://nginx") == "nginx"
    assert podspec.app_name_from_image("example.com/hello:1.0.0") == "hello"


def test_a_reference_never_pulled_is_not_in_the_store(tmp_path):
    with Store(str(tmp_path / "rocket")) as s:
        assert registry_pull.stored(s, "docker://127.0.0.1:5000/app:1") is None
        with pytest.raises(NotFoundError, match="has not been pulled"):
            s.resolve("docker://127.0.0.1:5000/app:1")
        with pytest.raises(NotFoundError, match="pull=never"):
            registry_pull.pull(s, "docker://127.0.0.1:5000/app:1", registry_pull.Options(pull="never"))

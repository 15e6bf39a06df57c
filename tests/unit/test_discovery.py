"""appc discovery without a network: the spec's conformance pages, templates, parent walk."""
import os

import pytest

from ansible_collections.appc.rocket.plugins.module_utils.stage0 import discovery
from ansible_collections.appc.rocket.plugins.module_utils.stage0.transport import FetchError

# The spec's discovery pages, carried in the checkout (tests/fixtures/appc/NOTICE).
PAGES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fixtures", "appc", "discovery")
NAME = "example.com/myapp"
LABELS = {"version": "1.0.0", "os": "linux", "arch": "amd64"}
FULL = "https://storage.example.com/example.com/myapp-1.0.0-linux-amd64."
SHORT = "https://storage.example.com/example.com/myapp-1.0.0."
KEYS = ["https://example.com/pubkeys.gpg"]


def ep(base):
    return {"aci": base + "aci", "asc": base + "aci.asc"}


# Every page of the conformance set, with what it must give for NAME + LABELS.
EXPECTED = {
    "meta01.html": ([ep(FULL)], KEYS),
    "meta02.html": ([ep(FULL)], []),
    "meta03.html": ([], KEYS),
    "meta04.html": ([ep("https://another.storage.example.com/example.com/myapp-1.0.0-linux-amd64.")], KEYS),
    "meta05.html": ([ep(FULL), ep(SHORT)], KEYS),
    # The hdfs template is a valid tag: discovery keeps it, in order; the fetcher skips it.
    "meta06.html": ([ep(FULL), ep(SHORT), ep("hdfs://storage.example.com/example.com/myapp-1.0.0-linux-amd64.")],
                    KEYS),
}


def page(name):
    with open(os.path.join(PAGES, name), encoding="utf-8") as f:
        return f.read()


def test_every_conformance_page_is_covered():
    assert sorted(f for f in os.listdir(PAGES) if f.endswith(".html")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_conformance_page_endpoints(name):
    aci, keys = EXPECTED[name]
    got = discovery.endpoints(discovery.parse_meta(page(name)), NAME, LABELS)
    assert got == {"aci": aci, "keys": keys}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_prefix_must_match_the_name(name):
    # "example.com" is a string prefix of both names below; "other.org" of neither.
    assert discovery.endpoints(discovery.parse_meta(page(name)), "other.org/myapp", LABELS) == {"aci": [], "keys": []}
    got = discovery.endpoints(discovery.parse_meta(page(name)), "example.com.evil/x", LABELS)
    assert got["keys"] == EXPECTED[name][1]  # the spec's rule is a string prefix


def test_meta_parse_details():
    metas = discovery.parse_meta(page("meta05.html"))
    assert metas == [
        ("ac-discovery", "example.com", "https://storage.example.com/{name}-{version}-{os}-{arch}.{ext}"),
        ("ac-discovery", "example.com", "https://storage.example.com/{name}-{version}.{ext}"),
        ("ac-discovery-pubkeys", "example.com", "https://example.com/pubkeys.gpg"),
    ]
    html = """<html><body>
      <META NAME="ac-discovery" CONTENT="  a.com   https://x/{name}.{ext}  ">
      <meta name="ac-discovery" content="only-one-field">
      <meta name="description" content="a.com https://ignored/{name}.{ext}">
      <meta name="ac-discovery" content="a.com https://y/{name}.{ext}"/>
      <meta content="a.com https://z/{name}.{ext}" name="ac-discovery">
      <meta name="ac-discovery" content="a.com https://q/{name}.{ext}?a=1&amp;b=2">
    """
    assert [m[2] for m in discovery.parse_meta(html)] == [
        "https://x/{name}.{ext}", "https://y/{name}.{ext}", "https://z/{name}.{ext}", "https://q/{name}.{ext}?a=1&b=2"]
    assert discovery.parse_meta("<meta name='ac-discovery' content='a.com https://broken") == []


def test_version_defaults_to_latest_and_unfilled_templates_are_skipped():
    metas = discovery.parse_meta(page("meta05.html"))
    # No os/arch: the first template stays unfilled and is skipped; no version: "latest".
    got = discovery.endpoints(metas, NAME, {})
    assert got["aci"] == [ep("https://storage.example.com/example.com/myapp-latest.")]
    got = discovery.endpoints(metas, NAME, {"os": "linux", "arch": "amd64"})
    assert got["aci"][0] == ep("https://storage.example.com/example.com/myapp-latest-linux-amd64.")


def test_other_labels_fill_templates_in_one_pass():
    metas = [("ac-discovery", "a.com", "https://s/{name}/{channel}/{version}.{ext}")]
    got = discovery.endpoints(metas, "a.com/x", {"channel": "beta", "version": "2"})
    assert got["aci"] == [{"aci": "https://s/a.com/x/beta/2.aci", "asc": "https://s/a.com/x/beta/2.aci.asc"}]
    # A label value is never re-scanned for placeholders, and labels cannot replace {ext}.
    got = discovery.endpoints(metas, "a.com/x", {"channel": "{ext}", "version": "2", "ext": "zip"})
    assert got["aci"][0]["aci"] == "https://s/a.com/x/{ext}/2.aci"
    assert discovery.render("https://s/{name}{}", {"name": "n"}) is None
    assert discovery.render("https://s/{name}", {"name": "n"}) == "https://s/n"


def test_parent_levels():
    assert discovery.levels("a.com/p/s") == ["a.com/p/s", "a.com/p", "a.com"]
    assert discovery.levels("a.com") == ["a.com"]


class FakeResponse:
    def __init__(self, body):
        self.encoding = "utf-8"
        self.body = body


class FakeClient:
    """Stands in for transport.Client: pages by URL, a FetchError with a status otherwise."""

    insecure = frozenset()

    def __init__(self, pages):
        self.pages = pages
        self.asked = []

    def get_small(self, url, limit, what="URL"):
        self.asked.append(url)
        if url in self.pages:
            return self.pages[url].encode(), FakeResponse(self.pages[url])
        raise FetchError("GET %s: HTTP 404 Not Found" % url, url, 404)


def test_walk_to_the_parent_on_4xx_and_on_pages_without_tags():
    tagless = "<html><head><meta name='ac-discovery' content='other.com https://x/{name}.{ext}'></head></html>"
    client = FakeClient({"https://example.com/myapp?ac-discovery=1": tagless,
                         "https://example.com?ac-discovery=1": page("meta01.html")})
    got = discovery.discover(client, "example.com/myapp/sub", LABELS)
    assert client.asked == ["https://example.com/myapp/sub?ac-discovery=1", "https://example.com/myapp?ac-discovery=1",
                            "https://example.com?ac-discovery=1"]
    assert got["aci"] == [ep("https://storage.example.com/example.com/myapp/sub-1.0.0-linux-amd64.")]
    assert got["keys"] == KEYS and got["page"] == "https://example.com?ac-discovery=1"
    assert [why for dummy_url, why in got["tried"]] == ["HTTP 404", "no ac-discovery tag for example.com/myapp/sub"]


def test_nothing_found_names_every_attempt():
    client = FakeClient({"https://example.com?ac-discovery=1": page("meta03.html")})
    with pytest.raises(discovery.DiscoveryError) as e:
        discovery.discover(client, "example.com/myapp", LABELS)
    msg = str(e.value)
    assert "example.com/myapp" in msg and "HTTP 404" in msg and "no ac-discovery tag" in msg
    assert len(e.value.tried) == 2

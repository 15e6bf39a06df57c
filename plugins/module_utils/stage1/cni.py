"""CNI: a network of the pod set up by real CNI plugins (the protocol, the result cache).

A `.conflist` (or `.conf`) network runs its plugins as CNI's runtime does: one process per
plugin, the command in the environment (CNI_COMMAND, CNI_CONTAINERID, CNI_NETNS, CNI_IFNAME,
CNI_PATH), the plugin's configuration on stdin (with the network's name and cniVersion, the
previous plugin's result as prevResult, and the runtimeConfig of the capabilities it
declares), the result or a CNI error on stdout. ADD runs the plugins in order, DEL in
reverse, CHECK in order.

Why the cache is not optional: a DEL without the result of the ADD (prevResult) leaves
some plugins' state behind (the firewall plugin's iptables rules, in a trial on Debian's
plugins). The cache, ``<data_dir>/net/cni/<uuid>-<ifname>.json``, holds the configuration
as it was at ADD and the result so far; it is written before the first plugin runs and
after each one, so a DEL after a crash at any point has what the ADD did. It goes when a
DEL succeeds.

Imported only for pods on a CNI network; standard library only.
"""
import json
import os
import subprocess

# Where plugins are looked for, after <data_dir>/cni/bin: CNI's conventional directory and
# the one Debian's containernetworking-plugins uses.
SEARCH_PATH = ("/opt/cni/bin", "/usr/lib/cni")
TIMEOUT = 60
_ENV_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"


class CNIError(OSError):
    """A plugin that failed, is missing or answered nonsense; the message names it."""


def search_path(net_dir):
    """The plugin directories for a data directory (net_dir: its `net` directory)."""
    return [os.path.join(os.path.dirname(net_dir), "cni", "bin")] + list(SEARCH_PATH)


def find_plugin(kind, path):
    for d in path:
        p = os.path.join(d, kind)
        if os.path.isfile(p) and os.access(p, os.X_OK):
            return p
    raise CNIError(2, "CNI plugin %s not found in %s" % (kind, ":".join(path)))


def cache_path(net_dir, uuid, ifname):
    return os.path.join(net_dir, "cni", "%s-%s.json" % (uuid, ifname))


def _write_cache(path, doc):
    os.makedirs(os.path.dirname(path), 0o700, exist_ok=True)
    tmp = "%s.%d.tmp" % (path, os.getpid())
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    try:
        os.write(fd, json.dumps(doc, sort_keys=True).encode())
        os.fsync(fd)  # a DEL after a host crash still needs it (host-local's files survive one)
    finally:
        os.close(fd)
    os.rename(tmp, path)


def read_cache(net_dir, uuid, ifname):
    try:
        with open(cache_path(net_dir, uuid, ifname), "rb") as f:
            return json.loads(f.read())
    except FileNotFoundError:
        return None


def _stdin(conflist, plugin, prev, runtime):
    doc = dict(plugin, name=conflist["name"], cniVersion=conflist["cniVersion"])
    if prev is not None:
        doc["prevResult"] = prev
    caps = plugin.get("capabilities") or {}
    rc = {k: v for k, v in (runtime or {}).items() if caps.get(k)}
    if rc:
        doc["runtimeConfig"] = rc
    return json.dumps(doc).encode()


def _exec(command, plugin, conflist, env, prev, runtime, path):
    exe = find_plugin(plugin["type"], path)
    full = dict(env, CNI_COMMAND=command, CNI_PATH=":".join(path), PATH=_ENV_PATH, LC_ALL="C")
    try:
        p = subprocess.run([exe], input=_stdin(conflist, plugin, prev, runtime), env=full,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        raise CNIError(62, "CNI plugin %s (%s of network %s) did not answer in %d s"
                       % (plugin["type"], command, conflist["name"], TIMEOUT))
    out = p.stdout.decode("utf-8", "replace")
    if p.returncode != 0:
        why = out.strip() or p.stderr.decode("utf-8", "replace").strip()
        try:
            err = json.loads(out)
            why = err.get("msg") or why
            if err.get("details"):
                why += " (%s)" % err["details"]
        except (ValueError, AttributeError):
            pass
        raise CNIError(5, "CNI plugin %s (%s of network %s) failed with status %d: %s"
                       % (plugin["type"], command, conflist["name"], p.returncode, why[-400:] or "no message"))
    if command != "ADD":
        return None
    try:
        result = json.loads(out)
        if not isinstance(result, dict):
            raise ValueError("not an object")
    except ValueError as e:
        raise CNIError(5, "CNI plugin %s (ADD of network %s) printed no JSON result: %s"
                       % (plugin["type"], conflist["name"], e))
    return result


def _env(uuid, netns, ifname):
    return {"CNI_CONTAINERID": uuid, "CNI_NETNS": netns, "CNI_IFNAME": ifname,
            "CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAME=%s" % uuid}


def add(net_dir, uuid, netns, ifname, conflist, runtime=None):
    """ADD every plugin in order; returns the final result (also in the cache)."""
    path = search_path(net_dir)
    cache = cache_path(net_dir, uuid, ifname)
    doc = {"config": conflist, "ifname": ifname, "netns": netns, "runtime": runtime or {}, "result": None}
    _write_cache(cache, doc)
    prev = None
    for plugin in conflist["plugins"]:
        prev = _exec("ADD", plugin, conflist, _env(uuid, netns, ifname), prev, runtime, path)
        doc["result"] = prev
        _write_cache(cache, doc)
    return prev


def delete(net_dir, uuid, ifname, netns=None):
    """DEL every plugin in reverse, with the cached configuration and result; the cache goes
    when all succeeded. Nothing cached: nothing was added. Returns error texts."""
    cached = read_cache(net_dir, uuid, ifname)
    if cached is None:
        return []
    conflist, prev, runtime = cached["config"], cached.get("result"), cached.get("runtime")
    if netns is None:
        netns = cached.get("netns") or ""
    if netns and not os.path.exists(netns):
        netns = ""  # the namespace is gone: plugins clean up what is outside it
    path = search_path(net_dir)
    errors = []
    for plugin in reversed(conflist["plugins"]):
        try:
            _exec("DEL", plugin, conflist, _env(uuid, netns, ifname), prev, runtime, path)
        except CNIError as e:
            errors.append(str(e))
    if not errors:
        try:
            os.unlink(cache_path(net_dir, uuid, ifname))
        except FileNotFoundError:
            pass
    return errors


def check(net_dir, uuid, ifname):
    """CHECK the network's plugins against the cached result: None when fine, else why."""
    cached = read_cache(net_dir, uuid, ifname)
    if cached is None or cached.get("result") is None:
        return "no cached CNI result"
    conflist = cached["config"]
    version = tuple(int(x) for x in str(conflist.get("cniVersion", "0")).split(".")[:2] if x.isdigit())
    if version < (0, 4):
        return None  # CHECK exists from CNI 0.4.0 on
    if not os.path.exists(cached.get("netns") or "/nonexistent"):
        return "the pod's network namespace is gone"
    path = search_path(net_dir)
    for plugin in conflist["plugins"]:
        try:
            _exec("CHECK", plugin, conflist, _env(uuid, cached["netns"], ifname), cached["result"],
                  cached.get("runtime"), path)
        except CNIError as e:
            return e.strerror or str(e)
    return None


def summary(result, ifname):
    """The pod's side of a result: {ip, prefix, gateway, mac, host_ifname, ips}."""
    ifaces = result.get("interfaces") or []
    ips = []  # type: list
    out = {"ip": None, "prefix": None, "gateway": None, "mac": None, "host_ifname": None, "ips": ips}  # type: dict
    pod_index = None
    for i, itf in enumerate(ifaces):
        if itf.get("sandbox") and itf.get("name") == ifname:
            out["mac"], pod_index = itf.get("mac"), i
        elif not itf.get("sandbox") and out["host_ifname"] is None and itf.get("name", "").startswith("veth"):
            out["host_ifname"] = itf.get("name")
    for ip in result.get("ips") or []:
        addr = ip.get("address", "")
        if ip.get("interface") is not None and pod_index is not None and ip["interface"] != pod_index:
            continue
        ips.append(addr)
        if out["ip"] is None and ":" not in addr and "/" in addr:
            a, plen = addr.split("/", 1)
            out.update(ip=a, prefix=int(plen), gateway=ip.get("gateway"))
    return out

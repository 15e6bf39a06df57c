"""Test images, built for real with the library's own deterministic ACI builder."""
import os

from ansible_collections.appc.rocket.plugins.module_utils.stage0 import aci


def manifest(name="example.com/test", version="1.0.0", app=True, deps=None, whitelist=None, **extra):
    m = {"acKind": "ImageManifest", "acVersion": "0.8.11", "name": name,
         "labels": [{"name": "version", "value": version}, {"name": "os", "value": "linux"},
                    {"name": "arch", "value": "amd64"}]}
    if app:
        m["app"] = {"exec": ["/bin/true"], "user": "0", "group": "0"}
    if deps:
        m["dependencies"] = deps
    if whitelist:
        m["pathWhitelist"] = whitelist
    m.update(extra)
    return m


def make_rootfs(path, files):
    """``files``: {relpath: bytes | ("link", target) | ("dir",)}."""
    os.makedirs(path, exist_ok=True)
    for rel, content in sorted(files.items()):
        full = os.path.join(path, rel)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        if isinstance(content, tuple) and content[0] == "link":
            os.symlink(content[1], full)
        elif isinstance(content, tuple) and content[0] == "dir":
            os.makedirs(full, exist_ok=True)
        else:
            with open(full, "wb") as f:
                f.write(content)
    return path


def build(tmp, name="example.com/test", version="1.0.0", files=None, compression="gzip", **kw):
    """Build an ACI file in ``tmp``; returns (path, image_id)."""
    tmp = str(tmp)
    tag = "%s-%s-%s" % (name.replace("/", "_"), version, os.urandom(3).hex())
    rootfs = make_rootfs(os.path.join(tmp, tag + ".rootfs"), files or {"etc/hello": b"hello\n"})
    out = os.path.join(tmp, tag + ".aci")
    image_id = aci.build_aci(rootfs, manifest(name, version, **kw), out, compression=compression)
    return out, image_id

"""An ACI with python3 in it, built from Debian packages, for running real modules in pods.

The connection plugin's tests and the Molecule pod-instances scenario need an image in
which Ansible modules run: python3 and its libraries, a shell and the commands Ansible's
shell plugin uses (busybox), /etc/os-release for facts, and a user `app` (1000) to become.
The packages come from the machine's configured apt sources with `apt-get download`,
are cached under .build/debs/<key>/ (key: the package names), unpacked with
`dpkg-deb -x` and built into an ACI with the library's own builder. The ACI is cached
under .build/images/ too. When the packages cannot be downloaded the build fails with
apt's message: the tests that need the image then fail, they are not skipped.

Run it alone to fill the cache (it needs the network; tests under tools/isolated.sh
have none), from the checkout: `.venv/bin/python -m tests.support.python_image`.
"""
import hashlib
import os
import shutil
import subprocess
import tempfile

from ansible_collections.appc.rocket.plugins.module_utils.stage0 import aci

from . import ROOT

NAME = "example.com/python3"
VERSION = "3.11"
DEB_CACHE = os.path.join(ROOT, ".build", "debs")
IMAGE_CACHE = os.path.join(ROOT, ".build", "images")

# Each package, and why it is in the image.
PACKAGES = (
    "python3.11-minimal",     # the interpreter
    "libpython3.11-minimal",  # its core standard library
    "libpython3.11-stdlib",   # the rest of the standard library modules use (json, subprocess, ...)
    "python3-minimal",        # /usr/bin/python3
    "libc6", "libgcc-s1",     # the C library and what it needs
    "zlib1g", "libexpat1", "libssl3", "libffi8", "libbz2-1.0", "liblzma5",
    "libcrypt1", "libsqlite3-0", "libuuid1",  # shared libraries of the modules above
    "media-types",            # /etc/mime.types for mimetypes
    "base-files",             # /etc/os-release, /etc/debian_version: distribution facts
    "busybox-static",         # /bin/sh and the commands Ansible runs (mkdir, chmod, rm, cat, su)
)

PASSWD = ("root:x:0:0:root:/root:/bin/sh\n"
          "app:x:1000:1000:app user:/home/app:/bin/sh\n"
          "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n")
GROUP = "root:x:0:\napp:x:1000:\nnogroup:x:65534:\n"
# Bump when the rootfs layout below changes, so cached images are rebuilt.
_LAYOUT = "2"


class ImageBuildError(RuntimeError):
    """The python3 image could not be built; the message says why."""


def _key(packages):
    return hashlib.sha256("\n".join(sorted(packages)).encode()).hexdigest()[:16]


def download_debs(packages=PACKAGES, cache=DEB_CACHE):
    """The directory holding one .deb per package, downloaded once per set of names."""
    dest = os.path.join(cache, _key(packages))
    if os.path.exists(os.path.join(dest, ".complete")):
        return dest
    os.makedirs(cache, exist_ok=True)
    work = tempfile.mkdtemp(prefix=".dl-", dir=cache)
    try:
        cmd = ["apt-get", "-o", "APT::Sandbox::User=root", "-q", "download"] + list(packages)
        p = subprocess.run(cmd, cwd=work, capture_output=True, text=True, check=False)
        if p.returncode != 0:
            # Stale package lists name versions the mirror no longer has: refresh once.
            subprocess.run(["apt-get", "-o", "APT::Sandbox::User=root", "-q", "update"],
                           capture_output=True, check=False)
            p = subprocess.run(cmd, cwd=work, capture_output=True, text=True, check=False)
        if p.returncode != 0:
            raise ImageBuildError("apt-get download of %s failed (it needs the network and apt "
                                  "sources; run `python -m tests.support.python_image` where both are "
                                  "reachable to fill %s): %s"
                                  % (" ".join(packages), cache, p.stderr.strip()[-2000:]))
        debs = [f for f in os.listdir(work) if f.endswith(".deb")]
        got = {f.split("_", 1)[0] for f in debs}
        missing = sorted(set(packages) - got)
        if missing:
            raise ImageBuildError("apt-get download did not bring %s" % ", ".join(missing))
        with open(os.path.join(work, ".complete"), "w") as f:
            f.write("\n".join(sorted(debs)) + "\n")
        try:
            os.rename(work, dest)
        except OSError:  # another run finished first
            if not os.path.exists(os.path.join(dest, ".complete")):
                raise
        return dest
    finally:
        if os.path.exists(work):
            shutil.rmtree(work)


def build_rootfs(path, debs_dir):
    """Unpack every .deb into path and add users, directories and busybox applets."""
    os.makedirs(path)
    for deb in sorted(f for f in os.listdir(debs_dir) if f.endswith(".deb")):
        p = subprocess.run(["dpkg-deb", "-x", os.path.join(debs_dir, deb), path],
                           capture_output=True, text=True, check=False)
        if p.returncode != 0:
            raise ImageBuildError("dpkg-deb -x %s failed: %s" % (deb, p.stderr.strip()))
    # Debian compiles bytecode when a package is installed; unpacked, there is none, and a
    # user who cannot write __pycache__ would compile the standard library at every start.
    # unchecked-hash: the builder sets every mtime to 0, which would invalidate timestamped pycs.
    p = subprocess.run(["chroot", path, "/usr/bin/python3.11", "-m", "compileall", "-q",
                        "--invalidation-mode", "unchecked-hash", "/usr/lib/python3.11"],
                       capture_output=True, text=True, check=False)
    if p.returncode != 0:
        raise ImageBuildError("compiling the image's standard library failed: %s" % (p.stdout + p.stderr)[-2000:])
    bb = os.path.join(path, "bin", "busybox")
    applets = subprocess.run([bb, "--list-full"], capture_output=True, text=True, check=True).stdout.split()
    for rel in applets:
        link = os.path.join(path, rel)
        if os.path.lexists(link):
            continue
        os.makedirs(os.path.dirname(link), exist_ok=True)
        os.symlink("/bin/busybox", link)
    for d in ("proc", "sys", "dev", "run", "root", "var/tmp"):
        os.makedirs(os.path.join(path, d), exist_ok=True)
    os.makedirs(os.path.join(path, "tmp"), exist_ok=True)
    os.chmod(os.path.join(path, "tmp"), 0o1777)
    os.chmod(os.path.join(path, "var/tmp"), 0o1777)
    os.chmod(os.path.join(path, "root"), 0o700)
    os.makedirs(os.path.join(path, "home", "app"))
    os.chown(os.path.join(path, "home", "app"), 1000, 1000)
    for name, text, mode in (("passwd", PASSWD, 0o644), ("group", GROUP, 0o644),
                             ("shadow", "root:*:19000::::::\napp:*:19000::::::\n", 0o640)):
        with open(os.path.join(path, "etc", name), "w") as f:
            f.write(text)
        os.chmod(os.path.join(path, "etc", name), mode)
    with open(os.path.join(path, "etc", "hostname"), "w") as f:
        f.write("pod\n")
    return path


def app(exec_=None, user="0", group="0"):
    """The image's app: something that stays up so tasks can be entered into it."""
    return {"exec": exec_ or ["/bin/sleep", "1000000"], "user": user, "group": group,
            "environment": [{"name": "LANG", "value": "C.UTF-8"}]}


def build(out_dir=None, name=NAME, version=VERSION, app_user="0"):
    """Build (or reuse) the python3 ACI; returns (path, image_id)."""
    debs = download_debs()
    key = hashlib.sha256(("%s %s %s %s %s" % (_LAYOUT, os.path.basename(debs), name, version, app_user)).encode()
                         ).hexdigest()[:16]
    os.makedirs(IMAGE_CACHE, exist_ok=True)
    cached = os.path.join(IMAGE_CACHE, "python3-%s.aci" % key)
    if not os.path.exists(cached) or not os.path.exists(cached + ".id"):
        work = tempfile.mkdtemp(prefix=".build-", dir=IMAGE_CACHE)
        try:
            rootfs = build_rootfs(os.path.join(work, "rootfs"), debs)
            manifest = {"acKind": "ImageManifest", "acVersion": "0.8.11", "name": name,
                        "labels": [{"name": "version", "value": version}, {"name": "os", "value": "linux"},
                                   {"name": "arch", "value": "amd64"}],
                        "app": app(user=app_user, group=app_user)}
            image_id = aci.build_aci(rootfs, manifest, cached, compression="none", owner=None)
            with open(cached + ".id.tmp", "w") as f:
                f.write(image_id)
            os.rename(cached + ".id.tmp", cached + ".id")
        finally:
            shutil.rmtree(work)
    with open(cached + ".id") as f:
        image_id = f.read().strip()
    if out_dir is None:
        return cached, image_id
    out = os.path.join(str(out_dir), os.path.basename(cached))
    if not os.path.exists(out):
        shutil.copyfile(cached, out)
    return out, image_id


if __name__ == "__main__":
    path, iid = build()
    print(path)
    print(iid)

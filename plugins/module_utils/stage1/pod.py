"""The pod as stage1 sees it: the pod manifest and each app's image manifest, read from
the pod directory (stage0 validated both), turned into what run needs per app.
"""
import os

from . import contract, isolators
from . import jsonlite  # the json package imports re: not on the start path


class ConfigError(ValueError):
    pass


class Mount:
    def __init__(self, volume, target, read_only):
        self.volume = volume        # the volume dict (pod's or appVolume)
        self.target = target        # absolute path in the app's root
        self.read_only = read_only


class App:
    """One app of the pod, with the image's app replaced by the pod's when given."""

    def __init__(self, pod_dir, pod_app, image_manifest, privileged=False):
        self.name = pod_app["name"]
        self.pod_app = pod_app
        self.image_manifest = image_manifest
        app = pod_app.get("app") or image_manifest.get("app")
        if not app or not app.get("exec"):
            raise ConfigError("app %s: no exec in the pod or image manifest" % self.name)
        self.app = app
        self.exec = list(app["exec"])
        self.user = str(app.get("user", "0"))
        self.group = str(app.get("group", "0"))
        self.supplementary_gids = [int(g) for g in app.get("supplementaryGIDs") or ()]
        self.environment = [(e["name"], e["value"]) for e in app.get("environment") or ()]
        self.working_directory = app.get("workingDirectory") or "/"
        self.handlers = {}
        for h in app.get("eventHandlers") or ():
            self.handlers[h["name"]] = list(h["exec"])
        self.read_only_root = bool(pod_app.get("readOnlyRootFS"))
        self.privileged = privileged
        self.isolation = isolators.parse(app.get("isolators"), privileged)
        self.dir = os.path.join(pod_dir, contract.STAGE2, self.name)
        self.root = os.path.join(self.dir, "rootfs")
        self.mounts = []
        self.stop_signal, self.stop_timeout = stop_settings(pod_app)
        self.devices = []
        self.secrets = []  # names (contract.SECRETS_ANNOTATION)
        for a in pod_app.get("annotations") or ():
            if a.get("name") == contract.DEVICES_ANNOTATION:
                from . import hostdevices

                self.devices = hostdevices.parse([a])
            elif a.get("name") == contract.SECRETS_ANNOTATION:
                self.secrets = [n for n in str(a.get("value") or "").split(",") if n]

    def mount_points(self):
        return {mp["name"]: mp for mp in self.app.get("mountPoints") or ()}


def stop_settings(pod_app):
    """(signal number, timeout in seconds or None: the pod's) from prepare's annotations."""
    ann = {a.get("name"): a.get("value") for a in pod_app.get("annotations") or ()}
    sig = str(ann.get(contract.STOP_SIGNAL_ANNOTATION) or "")
    timeout = ann.get(contract.STOP_TIMEOUT_ANNOTATION)
    try:
        timeout = float(timeout) if timeout is not None else None
    except ValueError:
        timeout = None
    return (int(sig) if sig.isdigit() and 0 < int(sig) < 65 else 15), timeout


def is_privileged(manifest):
    return any(a.get("name") == contract.PRIVILEGED_ANNOTATION and a.get("value") == "true"
               for a in manifest.get("annotations") or ())


def _read_json(path):
    with open(path, "rb") as f:
        return jsonlite.loads(f.read().decode("utf-8"))


def volume_source(pod_dir, volume):
    if volume["kind"] == "host":
        return volume["source"]
    return os.path.join(pod_dir, "volumes", volume["name"])


def load(pod_dir):
    """(pod manifest, [App], {volume name: volume}) with every app's mounts resolved."""
    manifest = _read_json(os.path.join(pod_dir, contract.POD_MANIFEST))
    volumes = {v["name"]: dict(v) for v in manifest.get("volumes") or ()}
    privileged = is_privileged(manifest)
    apps = []
    for pod_app in manifest["apps"]:
        path = os.path.join(pod_dir, contract.STAGE2, pod_app["name"], "manifest")
        if not os.path.exists(path):
            # Outside the pod's mount namespace (enter, gc) stage1's root is not mounted:
            # prepare keeps the same manifest at apps/<app>/manifest.
            path = os.path.join(pod_dir, contract.app_file(pod_app["name"], "manifest"))
        image = _read_json(path)
        app = App(pod_dir, pod_app, image, privileged)
        points = app.mount_points()
        used = set()
        for m in pod_app.get("mounts") or ():
            vol = m.get("appVolume") or volumes.get(m["volume"])
            if vol is None:
                raise ConfigError("app %s: mount names no volume %r" % (app.name, m["volume"]))
            path = m.get("path") or m.get("mountPoint")
            read_only = bool(vol.get("readOnly"))
            if not path.startswith("/"):
                mp = points.get(path)
                if mp is None:
                    raise ConfigError("app %s: no mount point %r in the app" % (app.name, path))
                used.add(path)
                path = mp["path"]
                read_only = read_only or bool(mp.get("readOnly"))
            else:
                for mp in points.values():
                    if mp["path"].rstrip("/") == path.rstrip("/"):
                        used.add(mp["name"])
                        read_only = read_only or bool(mp.get("readOnly"))
            if m.get("appVolume"):
                vol = dict(vol, name="%s.%s" % (app.name, vol["name"]))
                volumes[vol["name"]] = vol
            app.mounts.append(Mount(vol, path, read_only))
        # A mount point no volume is given for gets an implicit empty volume of its own.
        for name, mp in points.items():
            if name not in used:
                vol = {"name": "%s.%s" % (app.name, name), "kind": "empty", "mode": "0755",
                       "uid": 0, "gid": 0}
                volumes[vol["name"]] = vol
                app.mounts.append(Mount(vol, mp["path"], bool(mp.get("readOnly"))))
        app.mounts.sort(key=lambda mt: len([c for c in mt.target.split("/") if c]))
        apps.append(app)
    return manifest, apps, volumes


def create_empty_volumes(pod_dir, volumes, id_shift=0):
    """volumes/<name> for every empty volume, with its mode/uid/gid, when missing.

    id_shift: the host id of the pod's root under private_users (0 without)."""
    base = os.path.join(pod_dir, "volumes")
    for vol in volumes.values():
        if vol["kind"] != "empty":
            continue
        os.makedirs(base, mode=0o755, exist_ok=True)
        path = os.path.join(base, vol["name"])
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            continue
        os.chown(path, id_shift + int(vol.get("uid") or 0), id_shift + int(vol.get("gid") or 0))
        os.chmod(path, int(str(vol.get("mode") or "0755"), 8))


def metadata_url(pod_dir):
    """AC_METADATA_URL from metadata.json (written by stage0 when the pod uses the metadata
    service): http://<gateway of the pod's first network, else 127.0.0.1>:<port>/<token>.
    None when the pod does not use the service. Read once networking is set up."""
    try:
        with open(os.path.join(pod_dir, contract.METADATA), "rb") as f:
            conf = jsonlite.loads(f.read())
    except FileNotFoundError:
        return None
    host = "127.0.0.1"
    try:
        with open(os.path.join(pod_dir, contract.NET_INFO), "rb") as f:
            nets = jsonlite.loads(f.read())
        if nets and nets[0].get("gateway"):
            host = nets[0]["gateway"]
    except (OSError, ValueError, AttributeError, TypeError):
        pass
    if ":" in host:
        host = "[%s]" % host
    return "http://%s:%d/%s" % (host, int(conf["port"]), conf["token"])

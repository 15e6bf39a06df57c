"""One library operation in its own process, so a test can SIGKILL it (never pytest).

``PYTHONPATH=.build/collections python driver.py DATA_DIR OP [ARG...]`` (harness.env());
prints one JSON line with the result on success.
The crash points read ROCKET_CRASH_AT / ROCKET_CRASH_LOG from this process's environment.

Ops: import PATH | render REF | prepare IMAGE [SCRIPT] | run UUID | foreground UUID |
stop UUID | remove UUID | remove_many UUID... | podgc | storegc GRACE | rmi REF | fetch URL | pull DOCKER_REF |
cycle ACI IMAGE (import ACI, render, prepare a pod of IMAGE, start, stop, remove it, rmi ACI).
"""
import json
import sys

from ansible_collections.appc.rocket.plugins.module_utils.stage0 import (
    pod as podmod, pod_gc, prepare, run, store_gc)
from ansible_collections.appc.rocket.plugins.module_utils.stage0.store import Store

LONG = "trap 'exit 0' TERM; while true; do sleep 0.05; done"


def spec(image, script=LONG):
    return {"apps": [{"name": "app", "image": image, "exec": ["/bin/sh", "-c", script]}]}


def main(data_dir, op, *args):
    store = Store(data_dir)
    dd = store.dd
    if op == "import":
        return store.import_file(args[0])[0]["id"]
    if op == "render":
        return store.render(args[0])["key"]
    if op == "prepare":  # a named pod, as the modules make it
        with podmod.name_lock(dd, "crash"):
            uuid = prepare.prepare(store, spec(args[0], *args[1:])).pod.uuid
            podmod.set_name(dd, "crash", uuid)
        return uuid
    if op in ("run", "foreground", "stop", "remove"):
        p = podmod.find(dd, args[0])
        if op == "run":
            return run.start_detached(p, net="none")
        if op == "foreground":
            return run.run_foreground(p, net="none")
        if op == "stop":
            return run.stop(p, timeout=5)
        pod_gc.remove(p, stop_timeout=5)
        return None
    if op == "remove_many":  # as pod_set removes: stop all, one stage1 gc for all, then each
        ps = [podmod.find(dd, u) for u in args]
        pod_gc.stop_and_gc([(p, 5) for p in ps])
        for p in ps:
            pod_gc.remove(p, stop_timeout=5)
        return None
    if op == "podgc":
        return pod_gc.gc(dd, grace=0)
    if op == "storegc":
        return store_gc.gc(store, grace=float(args[0]))
    if op == "rmi":
        return store.remove(args[0])["id"]
    if op == "fetch":
        from ansible_collections.appc.rocket.plugins.module_utils.stage0 import fetch
        return fetch.fetch(store, src=args[0], insecure=["image", "http"], pull="update")[0]["id"]
    if op == "pull":   # a plain-http registry of the test
        from ansible_collections.appc.rocket.plugins.module_utils.stage0 import registry_pull
        return registry_pull.pull(store, args[0], registry_pull.Options(insecure=True, pull="update"))[0]["id"]
    if op == "cycle":
        image_id = store.import_file(args[0])[0]["id"]
        store.render(image_id)
        p = prepare.prepare(store, spec(args[1])).pod
        run.start_detached(p, net="none")
        run.stop(p, timeout=5)
        pod_gc.remove(p, stop_timeout=5)
        store.remove(image_id)
        return image_id
    raise SystemExit("unknown op %s" % op)


if __name__ == "__main__":
    out = main(*sys.argv[1:])
    sys.stdout.write(json.dumps(out) + "\n")

# -*- coding: utf-8 -*-
# Copyright: appc.rocket developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The appc metadata service: one daemon per data directory, standard library only.

This file is also a program. stage0 (metadata.py) copies it to ``<data_dir>/metadata/
service.py`` and runs it from there with the interpreter that runs stage0, so the daemon
never imports from a module's temporary payload and does not depend on any stage1 image.
It therefore imports nothing of the collection.

Two sockets in one single-threaded selectors loop (no thread per client; its latency under
many polling clients is in docs/performance.md):

- TCP (default 0.0.0.0:18112): the apps' HTTP API. The first path segment is the pod's
  token (256 random bits); only that pod's data is reachable with it. Apps on the host
  network reach it on 127.0.0.1, pods on private networks on their gateway's address.
- A unix socket ``control.sock`` (0600, in a 0700 directory, and SO_PEERCRED must say
  uid 0): one JSON line in, one JSON line out. ``register``/``deregister`` a pod by UUID
  (the daemon reads the pod from ``pods/run/<uuid>``: ``metadata.json``, ``pod``,
  ``apps/<app>/manifest``), ``ping``, ``list``.

On start it registers every running pod that has a ``metadata.json``, so a restarted
service serves the pods it served before (their tokens are in their pod directories).
"""
import base64
import errno
import fcntl
import gc
import hashlib
import hmac
import json
import os
import selectors
import signal
import socket
import struct
import sys
import time
from urllib.parse import parse_qs

VERSION = 1                   # of the control protocol and of what is served
DEFAULT_PORT = 18112
MAX_HEAD = 16 << 10           # request line and headers
MAX_BODY = 1 << 20            # a form to sign
MAX_CONNECTIONS = 4096
IDLE_TIMEOUT = 60.0           # seconds a client connection may sit idle
PREFIX = "/acMetadata/v1/"
JSON = "application/json"
TEXT = "text/plain; charset=us-ascii"
_HEX = frozenset("0123456789abcdef")
_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
            405: "Method Not Allowed", 411: "Length Required", 413: "Content Too Large",
            431: "Request Header Fields Too Large", 500: "Internal Server Error", 501: "Not Implemented",
            505: "HTTP Version Not Supported"}


def is_uuid(text):
    parts = text.split("-")
    return (len(text) == 36 and [len(p) for p in parts] == [8, 4, 4, 4, 12]
            and all(c in _HEX for p in parts for c in p))


def _compact(doc):
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def merge_annotations(image_annotations, pod_app_annotations):
    """An app's annotations: the image's, each overridden in place by the pod app's one of
    the same name, then the pod app's new ones, in order. Always a list."""
    merged = [{"name": a["name"], "value": a["value"]} for a in image_annotations or ()]
    where = {a["name"]: i for i, a in enumerate(merged)}
    for a in pod_app_annotations or ():
        if a["name"] in where:
            merged[where[a["name"]]]["value"] = a["value"]
        else:
            where[a["name"]] = len(merged)
            merged.append({"name": a["name"], "value": a["value"]})
    return merged


def _read(path, limit=16 << 20):
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        chunks: list = []
        size = 0
        while True:
            b = os.read(fd, 1 << 16)
            if not b:
                return b"".join(chunks)
            size += len(b)
            if size > limit:
                raise ValueError("%s is larger than %d bytes" % (path, limit))
            chunks.append(b)
    finally:
        os.close(fd)


class PodEntry:
    """What one pod's token reaches, every GET answer computed once at registration."""

    def __init__(self, uuid, pod_dir):
        meta = json.loads(_read(os.path.join(pod_dir, "metadata.json"), 1 << 16))
        token, key = meta.get("token"), meta.get("hmac_key")
        if not isinstance(token, str) or len(token) < 32 or not all(c in _HEX for c in token):
            raise ValueError("metadata.json of pod %s has no valid token" % uuid)
        if not isinstance(key, str) or len(key) < 64:
            raise ValueError("metadata.json of pod %s has no valid hmac_key" % uuid)
        raw_manifest = _read(os.path.join(pod_dir, "pod"))
        manifest = json.loads(raw_manifest)
        self.uuid = uuid
        self.uuid_bytes = bytes.fromhex(uuid.replace("-", ""))
        self.token = token
        self.key = bytes.fromhex(key)
        gets = {
            "pod/annotations": (JSON, _compact(manifest.get("annotations"))),
            "pod/manifest": (JSON, raw_manifest),
            "pod/uuid": (TEXT, uuid.encode("ascii")),
        }
        for app in manifest.get("apps") or ():
            name = app["name"]
            raw_image = _read(os.path.join(pod_dir, "apps", name, "manifest"))
            image = json.loads(raw_image)
            base = "apps/%s/" % name
            gets[base + "annotations"] = (JSON, _compact(merge_annotations(image.get("annotations"),
                                                                           app.get("annotations"))))
            gets[base + "image/manifest"] = (JSON, raw_image)
            gets[base + "image/id"] = (TEXT, app["image"]["id"].encode("ascii"))
        self.gets = gets

    def sign(self, content):
        return hmac.new(self.key, self.uuid_bytes + content, hashlib.sha512).digest()


class Conn:
    __slots__ = ("sock", "inbuf", "outbuf", "close_after", "last", "control", "writing")

    def __init__(self, sock, control=False):
        self.sock = sock
        self.inbuf = bytearray()
        self.outbuf = bytearray()
        self.close_after = False
        self.last = time.monotonic()
        self.control = control
        self.writing = False  # registered for EVENT_WRITE too (a reply did not fit at once)


class Service:
    def __init__(self, data_dir, address, port):
        self.data_dir = os.path.abspath(data_dir)
        self.dir = os.path.join(self.data_dir, "metadata")
        self.run_dir = os.path.join(self.data_dir, "pods", "run")
        self.socket_path = os.path.join(self.dir, "control.sock")
        self.log_path = os.path.join(self.dir, "service.log")
        self.by_token = {}
        self.by_uuid = {}
        self.sel = selectors.DefaultSelector()
        self.conns = {}
        self.stopping = False
        self.date = (0, b"")
        self.tcp = socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET, socket.SOCK_STREAM)
        self.tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.tcp.bind((address, port))
        self.tcp.listen(1024)
        self.tcp.setblocking(False)
        self.port = self.tcp.getsockname()[1]
        try:
            os.unlink(self.socket_path)
        except FileNotFoundError:
            pass
        self.ctl = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            self.ctl.bind(self.socket_path)
        finally:
            os.umask(old)
        os.chmod(self.socket_path, 0o600)
        self.ctl.listen(64)
        self.ctl.setblocking(False)
        self.sel.register(self.tcp, selectors.EVENT_READ, "tcp")
        self.sel.register(self.ctl, selectors.EVENT_READ, "ctl")

    # -- registrations -----------------------------------------------------------------
    def register(self, uuid):
        if not is_uuid(uuid):
            raise ValueError("%r is not a pod UUID" % (uuid,))
        pod_dir = os.path.join(self.run_dir, uuid)
        if not os.path.isdir(pod_dir):
            raise ValueError("pod %s is not in %s" % (uuid, self.run_dir))
        entry = PodEntry(uuid, pod_dir)
        self.deregister(uuid)
        self.by_uuid[uuid] = entry
        self.by_token[entry.token] = entry
        self.sweep()

    def deregister(self, uuid):
        entry = self.by_uuid.pop(uuid, None)
        if entry is not None:
            self.by_token.pop(entry.token, None)
        return entry is not None

    def sweep(self):
        """Forget pods whose directory left ``pods/run`` (gc marked or removed them)."""
        for uuid in [u for u in self.by_uuid if not os.path.isdir(os.path.join(self.run_dir, u))]:
            self.deregister(uuid)

    def rebuild(self):
        """Register every running pod (its directory locked) that has a metadata.json."""
        try:
            names = sorted(os.listdir(self.run_dir))
        except FileNotFoundError:
            return
        for uuid in names:
            pod_dir = os.path.join(self.run_dir, uuid)
            if not is_uuid(uuid) or not os.path.exists(os.path.join(pod_dir, "metadata.json")):
                continue
            try:
                fd = os.open(pod_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC | os.O_NOFOLLOW)
            except OSError:
                continue
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                    running = False  # nobody holds it: the pod has exited
                except OSError as e:
                    running = e.errno in (errno.EWOULDBLOCK, errno.EAGAIN)
            finally:
                os.close(fd)
            if running:
                try:
                    self.register(uuid)
                except (OSError, ValueError, KeyError, TypeError) as e:
                    self.log("cannot register pod %s: %s" % (uuid, e))

    # -- the loop ----------------------------------------------------------------------
    def log(self, msg):
        try:
            if os.path.getsize(self.log_path) > (1 << 20):
                os.replace(self.log_path, self.log_path + ".1")
        except OSError:
            pass
        try:
            with open(self.log_path, "a") as f:
                f.write("%s %s\n" % (time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), msg))
        except OSError:
            pass

    def serve(self, wake_fd):
        self.sel.register(wake_fd, selectors.EVENT_READ, "wake")
        next_idle = time.monotonic() + 5
        while not self.stopping:
            for key, mask in self.sel.select(1.0):
                what = key.data
                if what == "tcp" or what == "ctl":
                    self._accept(key.fileobj, what == "ctl")
                elif what == "wake":
                    try:
                        os.read(wake_fd, 64)
                    except OSError:
                        pass
                else:
                    if mask & selectors.EVENT_READ:
                        self._readable(what)
                    if mask & selectors.EVENT_WRITE and what.sock is not None:
                        self._flush(what)
            now = time.monotonic()
            if now >= next_idle:
                next_idle = now + 5
                for c in [c for c in self.conns.values() if now - c.last > IDLE_TIMEOUT]:
                    self._close(c)
        for c in list(self.conns.values()):
            self._close(c)

    def close(self):
        for s in (self.tcp, self.ctl):
            s.close()
        try:
            os.unlink(self.socket_path)
        except OSError:
            pass

    def _accept(self, listener, control):
        for dummy in range(64):
            try:
                sock, dummy_addr = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:  # EMFILE and friends: drop this round, keep serving
                self.log("accept: %s" % e)
                return
            if len(self.conns) >= MAX_CONNECTIONS:
                sock.close()
                continue
            sock.setblocking(False)
            if control:
                creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
                dummy_pid, uid, dummy_gid = struct.unpack("3i", creds)
                if uid != 0:
                    try:
                        sock.send(b'{"ok": false, "error": "only root may use the control socket"}\n')
                    except OSError:
                        pass
                    sock.close()
                    continue
            else:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            c = Conn(sock, control)
            self.conns[sock.fileno()] = c
            self.sel.register(sock, selectors.EVENT_READ, c)

    def _close(self, c):
        if c.sock is None:
            return
        self.conns.pop(c.sock.fileno(), None)
        try:
            self.sel.unregister(c.sock)
        except (KeyError, ValueError):
            pass
        c.sock.close()
        c.sock = None

    def _readable(self, c):
        try:
            data = c.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._close(c)
            return
        c.last = time.monotonic()
        c.inbuf += data
        if c.control:
            self._control(c)
        else:
            self._requests(c)
        if c.sock is not None:
            self._flush(c)

    def _flush(self, c):
        if c.outbuf:
            try:
                n = c.sock.send(c.outbuf)
            except (BlockingIOError, InterruptedError):
                n = 0
            except OSError:
                self._close(c)
                return
            del c.outbuf[:n]
        if c.outbuf:
            if not c.writing:
                self.sel.modify(c.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, c)
                c.writing = True
            return
        if c.close_after:
            self._close(c)
        elif c.writing:  # one epoll_ctl only when interest changes, not per request
            self.sel.modify(c.sock, selectors.EVENT_READ, c)
            c.writing = False

    # -- control socket ----------------------------------------------------------------
    def _control(self, c):
        while b"\n" in c.inbuf and not c.close_after:
            line, dummy, rest = bytes(c.inbuf).partition(b"\n")
            c.inbuf = bytearray(rest)
            try:
                req = json.loads(line)
                answer = self._op(req)
            except (ValueError, TypeError, KeyError, OSError) as e:
                answer = {"ok": False, "error": str(e)}
            c.outbuf += json.dumps(answer).encode() + b"\n"
        if len(c.inbuf) > MAX_HEAD:
            c.outbuf += b'{"ok": false, "error": "request too long"}\n'
            c.close_after = True

    def _op(self, req):
        op = req.get("op")
        if op == "ping":
            return {"ok": True, "version": VERSION, "pid": os.getpid(), "port": self.port,
                    "pods": len(self.by_uuid)}
        if op == "register":
            self.register(req["uuid"])
            return {"ok": True}
        if op == "deregister":
            return {"ok": True, "known": self.deregister(req["uuid"])}
        if op == "list":
            self.sweep()
            return {"ok": True, "pods": sorted(self.by_uuid)}
        if op == "stop":
            self.stopping = True
            return {"ok": True}
        return {"ok": False, "error": "unknown op %r" % (op,)}

    # -- HTTP --------------------------------------------------------------------------
    def _requests(self, c):
        buf = c.inbuf
        while not c.close_after:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > MAX_HEAD:
                    self._answer(c, 431, TEXT, b"request head too large", close=True)
                return
            if end > MAX_HEAD:
                self._answer(c, 431, TEXT, b"request head too large", close=True)
                return
            head = bytes(buf[:end]).decode("latin-1")
            lines = head.split("\r\n")
            parts = lines[0].split(" ")
            if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
                if len(parts) == 3 and parts[2].startswith("HTTP/"):
                    self._answer(c, 505, TEXT, b"HTTP/1.x only", close=True)
                else:
                    self._answer(c, 400, TEXT, b"malformed request line", close=True)
                return
            method, target, version = parts
            length = 0
            flavor = None
            conn_hdr = ""
            chunked = False
            bad = None
            for line in lines[1:]:
                name, sep, value = line.partition(":")
                if not sep:
                    bad = "malformed header line"
                    break
                name = name.strip().lower()
                if name == "content-length":
                    value = value.strip()
                    if not value.isdigit():
                        bad = "bad Content-Length"
                        break
                    length = int(value)
                elif name == "metadata-flavor":
                    flavor = value.strip()
                elif name == "connection":
                    conn_hdr = value.strip().lower()
                elif name == "transfer-encoding":
                    chunked = True
            if bad:
                self._answer(c, 400, TEXT, bad.encode(), close=True)
                return
            if chunked:
                self._answer(c, 501, TEXT, b"chunked request bodies are not supported: send Content-Length",
                             close=True)
                return
            if length > MAX_BODY:
                self._answer(c, 413, TEXT, b"request body too large", close=True)
                return
            if len(buf) < end + 4 + length:
                return  # the body is still on its way
            body = bytes(buf[end + 4:end + 4 + length])
            del buf[:end + 4 + length]
            close = "close" in conn_hdr or (version == "HTTP/1.0" and "keep-alive" not in conn_hdr)
            try:
                status, ctype, payload = self._route(method, target, flavor, body)
            except Exception as e:  # noqa: BLE001 - a bug must not take the service down
                # Never log the token (the first path segment).
                self.log("error on %s .../%s: %r" % (method, "/".join(target.split("/")[2:])[:200], e))
                status, ctype, payload = 500, TEXT, b"internal error"
            allow = None
            if status == 405:
                allow = "POST" if target.split("?", 1)[0].endswith(("/pod/hmac/sign", "/pod/hmac/verify")) else "GET"
            self._answer(c, status, ctype, payload, close=close, allow=allow)

    def _answer(self, c, status, ctype, payload, close=False, allow=None):
        now = int(time.time())
        if self.date[0] != now:
            self.date = (now, time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(now)).encode())
        fields = (status, _REASONS[status].encode(), self.date[1], ctype.encode(), len(payload))
        head = (b"HTTP/1.1 %d %s\r\nDate: %s\r\nMetadata-Flavor: AppContainer\r\nContent-Type: %s\r\n"
                b"Content-Length: %d\r\n" % fields)
        if allow:
            head += b"Allow: %s\r\n" % allow.encode()
        if close:
            head += b"Connection: close\r\n"
            c.close_after = True
        c.outbuf += head + b"\r\n" + payload

    def _route(self, method, target, flavor, body):
        path, dummy, query = target.partition("?")
        token, sep, rest = path[1:].partition("/")
        if not path.startswith("/") or not sep or not ("/" + rest).startswith(PREFIX):
            return 404, TEXT, b"not found: paths are /<token>/acMetadata/v1/..."
        if flavor != "AppContainer":
            return 400, TEXT, b"the Metadata-Flavor: AppContainer header is required"
        entry = self.by_token.get(token)
        if entry is None or not hmac.compare_digest(entry.token, token):
            return 401, TEXT, b"unknown token"
        sub = ("/" + rest)[len(PREFIX):]
        if sub == "pod/hmac/sign" or sub == "pod/hmac/verify":
            if method != "POST":
                return 405, TEXT, b"use POST"
            form = parse_qs(body, keep_blank_values=True)
            if query:
                for k, v in parse_qs(query.encode("latin-1"), keep_blank_values=True).items():
                    form.setdefault(k, v)
            if sub == "pod/hmac/sign":
                return self._sign(entry, form)
            return self._verify(form)
        answer = entry.gets.get(sub)
        if answer is None:
            return 404, TEXT, b"not found"
        if method != "GET":
            return 405, TEXT, b"use GET"
        return 200, answer[0], answer[1]

    def _sign(self, entry, form):
        content = form.get(b"content")
        if content is None:
            return 400, TEXT, b"the content form field is missing"
        return 200, TEXT, base64.b64encode(entry.sign(content[0]))

    def _verify(self, form):
        uuid = (form.get(b"uuid") or form.get(b"uid") or [b""])[0].decode("latin-1").lower()
        if not is_uuid(uuid):
            return 400, TEXT, b"the uuid form field is missing or not a pod UUID"
        content = form.get(b"content")
        if content is None:
            return 400, TEXT, b"the content form field is missing"
        sig = form.get(b"signature")
        try:
            if sig is None:
                raise ValueError
            signature = base64.b64decode(sig[0], validate=True)
        except ValueError:
            return 400, TEXT, b"the signature form field is missing or not base64"
        signer = self.by_uuid.get(uuid)
        if signer is None or not hmac.compare_digest(signer.sign(content[0]), signature):
            return 403, TEXT, b""
        return 200, TEXT, b""


def _write_pidfile(path):
    tmp = "%s.%d.tmp" % (path, os.getpid())
    with open(tmp, "w") as f:
        f.write("%d\n" % os.getpid())
    os.rename(tmp, path)


def main(argv):
    """``service.py --data-dir D [--address A] [--port P] [--ready-fd N]``"""
    opts = {"--data-dir": "", "--address": "0.0.0.0", "--port": str(DEFAULT_PORT), "--ready-fd": "-1"}
    for a in argv:
        k, sep, v = a.partition("=")
        if not sep or k not in opts:
            sys.stderr.write("usage: service.py --data-dir=D [--address=A] [--port=P] [--ready-fd=N]\n")
            return 2
        opts[k] = v
    ready = int(opts["--ready-fd"])
    try:
        if not opts["--data-dir"]:
            raise ValueError("--data-dir is required")
        service = Service(opts["--data-dir"], opts["--address"], int(opts["--port"]))
    except (OSError, ValueError, OverflowError) as e:
        if ready >= 0:
            os.write(ready, ("failed %s\n" % e).encode("utf-8", "replace"))
        return 1
    wake_r, wake_w = os.pipe()
    for fd in (wake_r, wake_w):
        os.set_blocking(fd, False)
    signal.set_wakeup_fd(wake_w)

    def on_signal(signum, frame):
        service.stopping = True

    for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(s, on_signal)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    pidfile = os.path.join(service.dir, "pid")
    try:
        service.rebuild()
        gc.freeze()  # what start-up made stays out of every collection: shorter pauses
        _write_pidfile(pidfile)
        if ready >= 0:
            os.write(ready, b"ready %d %d\n" % (os.getpid(), service.port))
            os.close(ready)
        service.log("serving on port %d, %d pods registered" % (service.port, len(service.by_uuid)))
        service.serve(wake_r)
    finally:
        service.close()
        try:
            with open(pidfile) as f:
                mine = f.read().strip() == str(os.getpid())
            if mine:
                os.unlink(pidfile)
        except OSError:
            pass
        service.log("stopped")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

# -*- coding: utf-8 -*-
# Copyright: appc.rocket developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The appc metadata service: one daemon per data directory, standard library only.

This file is also a program. stage0 (metadata.py) copies it to ``<data_dir>/metadata/
service.py`` and runs it from there with the interpreter that runs stage0, so the daemon
never imports from a module's temporary payload and does not depend on any stage1 image.
It therefore imports nothing of the collection.

Sockets in one single-threaded selectors loop (no thread per client; its latency under
many polling clients is in docs/performance.md):

- TCP on 127.0.0.1:18112 (host-network pods) and on the gateway address of every network
  a registered pod is on (bound with IP_FREEBIND before the address exists; closed when
  no pod uses it): the apps' HTTP API, never 0.0.0.0. The first path segment is the
  pod's token (256 random bits); only that pod's data is reachable with it, and only from
  the pod's own addresses (net.json), or from loopback for a host-network pod.
- A unix socket ``control.sock`` (0600, in a 0700 directory, and SO_PEERCRED must say
  uid 0): one JSON line in, one JSON line out. ``register``/``deregister`` a pod by UUID
  (the daemon reads the pod from ``pods/run/<uuid>``: ``metadata.json``, ``pod``,
  ``apps/<app>/manifest``), ``ping``, ``list``.

On start it registers every running pod that has a ``metadata.json``, so a restarted
service serves the pods it served before (their tokens are in their pod directories).
The process started is a supervisor (its PID is in ``pid``): it forks the service and
forks it again, on the same port, when it dies of anything but a stop; the service dies
with it (PR_SET_PDEATHSIG).

Hostile clients: a request the parser refuses is answered 400 and its connection closed;
an exception while serving one connection closes that connection only. Per connection at
most MAX_IN bytes are read ahead and MAX_OUT bytes of answers wait: past that, pipelined
requests wait and the socket is not read. A request must be complete REQUEST_TIMEOUT
seconds after it began (or after the connection was accepted); a peer address holds at
most MAX_PER_PEER connections.
"""
import base64
import ctypes
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

VERSION = 2                   # of the control protocol and of what is served
DEFAULT_PORT = 18112
MAX_HEAD = 16 << 10           # request line and headers
MAX_BODY = 1 << 20            # a form to sign
MAX_CONNECTIONS = 4096
MAX_PER_PEER = 128            # connections from one source address
MAX_IN = MAX_HEAD + MAX_BODY + (64 << 10)  # read ahead per connection
MAX_OUT = 256 << 10           # answers waiting per connection before requests wait too
REQUEST_TIMEOUT = 10.0        # seconds from a request's first byte (or the accept) to its end
IDLE_TIMEOUT = 60.0           # seconds a keep-alive connection may sit idle between requests
IP_FREEBIND = 15              # linux/in.h: bind to an address no interface has yet
PR_SET_PDEATHSIG = 1
RESTART_DELAYS = (0.05, 0.2, 1.0, 2.0, 5.0)  # the supervisor's, after successive quick deaths
PREFIX = "/acMetadata/v1/"
JSON = "application/json"
TEXT = "text/plain; charset=us-ascii"
_HEX = frozenset("0123456789abcdef")
_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
            405: "Method Not Allowed", 408: "Request Timeout", 411: "Length Required", 413: "Content Too Large",
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


def _secrets(pod_dir):
    """(name, "sha256:<hex>") of the pod's secret_environment, from spec.json (stage0 keeps
    the digests there, never the values). A pod without spec.json has none."""
    try:
        doc = json.loads(_read(os.path.join(pod_dir, "spec.json"), 1 << 22))
    except FileNotFoundError:
        return frozenset()
    spec = doc.get("spec") or {}  # {"spec": the pod as asked for, with digests, ...}
    return frozenset((k, v) for k, v in spec.get("secret_environment") or ())


def _without_secrets(manifest, secrets):
    """The pod manifest to serve: the apps' environment without the secret values that
    prepare merged into it (the manifest itself is root's only). The same object when
    nothing is secret, so the manifest is served byte for byte."""
    if not secrets:
        return manifest
    names = {k for k, dummy in secrets}

    def secret(e):
        if e.get("name") not in names:
            return False
        value = str(e.get("value", "")).encode("utf-8", "surrogateescape")
        return (e["name"], "sha256:" + hashlib.sha256(value).hexdigest()) in secrets

    doc = json.loads(json.dumps(manifest))
    for app in doc.get("apps") or ():
        env = (app.get("app") or {}).get("environment")
        if env:
            app["app"]["environment"] = [e for e in env if not secret(e)]
    return doc


def _pod_addresses(pod_dir):
    """The pod's addresses and its networks' gateways (net.json, written by stage0 before
    the pod is registered); (None, ()) for a host-network pod, which has no address of its
    own and is served on loopback only."""
    try:
        doc = json.loads(_read(os.path.join(pod_dir, "net.json"), 1 << 20))
    except FileNotFoundError:
        return None, ()
    nets = doc.get("networks") or ()
    return frozenset(n["ip"] for n in nets), tuple(sorted({n["gateway"] for n in nets}))


def _loopback(addr):
    return addr.startswith("127.") or addr == "::1" or addr.startswith("::ffff:127.")


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
        self.addresses, self.gateways = _pod_addresses(pod_dir)
        served = _without_secrets(manifest, _secrets(pod_dir))
        gets = {
            "pod/annotations": (JSON, _compact(manifest.get("annotations"))),
            "pod/manifest": (JSON, raw_manifest if served is manifest else _compact(served)),
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


def _log(path, msg):
    try:
        if os.path.getsize(path) > (1 << 20):
            os.replace(path, path + ".1")
    except OSError:
        pass
    try:
        with open(path, "a") as f:
            f.write("%s %s\n" % (time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), msg))
    except OSError:
        pass


class Conn:
    __slots__ = ("sock", "inbuf", "outbuf", "close_after", "last", "control", "mask", "peer", "since")

    def __init__(self, sock, control=False, peer=""):
        self.sock = sock
        self.inbuf = bytearray()
        self.outbuf = bytearray()
        self.close_after = False
        self.last = time.monotonic()
        self.since = self.last  # when the request under way began (None: between requests)
        self.control = control
        self.mask = selectors.EVENT_READ
        self.peer = peer


def _listen(address, port):
    s = socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if not _loopback(address):  # a gateway stage1 has not configured yet
            s.setsockopt(socket.IPPROTO_IPV6 if ":" in address else socket.IPPROTO_IP, IP_FREEBIND, 1)
        s.bind((address, port))
        s.listen(1024)
        s.setblocking(False)
    except BaseException:
        s.close()
        raise
    return s


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
        self.per_peer = {}
        self.stopping = False
        self.date = (0, b"")
        self.address = address
        self.tcp = _listen(address, port)
        self.port = self.tcp.getsockname()[1]
        self.listeners = {address: self.tcp}  # address -> listening socket
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
        for gw in entry.gateways:
            if gw not in self.listeners:
                try:
                    sock = _listen(gw, self.port)
                except OSError as e:
                    raise ValueError("cannot listen on the gateway %s, port %d, of pod %s: %s"
                                     % (gw, self.port, uuid, e.strerror or e))
                self.listeners[gw] = sock
                self.sel.register(sock, selectors.EVENT_READ, "tcp")
        self.deregister(uuid)
        self.by_uuid[uuid] = entry
        self.by_token[entry.token] = entry
        self.sweep()

    def deregister(self, uuid):
        entry = self.by_uuid.pop(uuid, None)
        if entry is not None:
            self.by_token.pop(entry.token, None)
            self._unlisten()
        return entry is not None

    def _unlisten(self):
        """Close the gateways' listeners that no registered pod needs any more."""
        used = {gw for e in self.by_uuid.values() for gw in e.gateways}
        for addr in [a for a in self.listeners if a != self.address and a not in used]:
            sock = self.listeners.pop(addr)
            self.sel.unregister(sock)
            sock.close()

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
        _log(self.log_path, msg)

    def serve(self, wake_fd):
        self.sel.register(wake_fd, selectors.EVENT_READ, "wake")
        next_check = time.monotonic() + 1
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
                elif what.sock is not None:
                    try:
                        if mask & selectors.EVENT_READ:
                            self._readable(what)
                        if mask & selectors.EVENT_WRITE and what.sock is not None:
                            self._flush(what)
                    except Exception as e:  # noqa: BLE001 - one connection's bug ends that connection only
                        self.log("connection from %s closed on an error: %r" % (what.peer, e))
                        self._close(what)
            now = time.monotonic()
            if now >= next_check:
                next_check = now + 1
                self._deadlines(now)
        for c in list(self.conns.values()):
            self._close(c)

    def _deadlines(self, now):
        """Slow clients (a head sent a byte at a time, a body never finished) and idle ones."""
        for c in list(self.conns.values()):
            # Answers still unsent: the client is the slow one, and the idle timeout (from its
            # last read or received byte) is what ends it.
            if c.since is not None and not c.outbuf and now - c.since > REQUEST_TIMEOUT and not c.control:
                self._answer(c, 408, TEXT, b"the request did not arrive in time", close=True)
                self._flush(c)
            elif now - c.last > IDLE_TIMEOUT:
                self._close(c)

    def close(self):
        for s in list(self.listeners.values()) + [self.ctl]:
            s.close()
        self.listeners = {}

    def _accept(self, listener, control):
        for dummy in range(64):
            try:
                sock, addr = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:  # EMFILE and friends: drop this round, keep serving
                self.log("accept: %s" % e)
                return
            if len(self.conns) >= MAX_CONNECTIONS:
                sock.close()
                continue
            sock.setblocking(False)
            peer = ""
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
                peer = addr[0]
                if self.per_peer.get(peer, 0) >= MAX_PER_PEER:
                    sock.close()
                    continue
                self.per_peer[peer] = self.per_peer.get(peer, 0) + 1
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            c = Conn(sock, control, peer)
            self.conns[sock.fileno()] = c
            self.sel.register(sock, selectors.EVENT_READ, c)

    def _close(self, c):
        if c.sock is None:
            return
        self.conns.pop(c.sock.fileno(), None)
        if c.peer:
            n = self.per_peer.pop(c.peer, 1) - 1
            if n > 0:
                self.per_peer[c.peer] = n
        try:
            self.sel.unregister(c.sock)
        except (KeyError, ValueError):
            pass
        c.sock.close()
        c.sock = None

    def _readable(self, c):
        try:
            data = c.sock.recv(min(65536, MAX_IN - len(c.inbuf)) or 1)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._close(c)
            return
        now = time.monotonic()
        c.last = now
        if c.since is None:
            c.since = now
        c.inbuf += data
        self._process(c)
        if c.sock is not None:
            self._flush(c)

    def _process(self, c):
        if c.control:
            self._control(c)
        else:
            try:
                self._requests(c)
            except Exception as e:  # noqa: BLE001 - whatever the parser missed is a bad request
                self.log("bad request from %s: %r" % (c.peer, e))
                c.inbuf.clear()
                self._answer(c, 400, TEXT, b"malformed request", close=True)

    def _flush(self, c):
        while c.outbuf:
            try:
                n = c.sock.send(c.outbuf)
            except (BlockingIOError, InterruptedError):
                n = 0
            except OSError:
                self._close(c)
                return
            del c.outbuf[:n]
            if n:
                c.last = time.monotonic()
            if not (n and c.inbuf and len(c.outbuf) < MAX_OUT and not c.close_after):
                break
            self._process(c)  # pipelined requests that waited for room
            if c.sock is None:
                return
        if not c.outbuf and c.close_after:
            self._close(c)
            return
        # Read only while there is room for what the requests read would produce.
        want = selectors.EVENT_WRITE if c.outbuf else 0
        if len(c.outbuf) < MAX_OUT and len(c.inbuf) < MAX_IN and not c.close_after:
            want |= selectors.EVENT_READ
        if not want:  # nothing to send and no room to read: a request it will never finish
            self._close(c)
        elif want != c.mask:  # one epoll_ctl only when interest changes, not per request
            self.sel.modify(c.sock, want, c)
            c.mask = want

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
            return {"ok": True, "version": VERSION, "pid": os.getpid(), "supervisor": os.getppid(), "port": self.port,
                    "pods": len(self.by_uuid), "addresses": sorted(self.listeners)}
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
        while not c.close_after and len(c.outbuf) < MAX_OUT:
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
            seen_length = None
            for line in lines[1:]:
                name, sep, value = line.partition(":")
                if not sep:
                    bad = "malformed header line"
                    break
                name = name.strip().lower()
                if name == "content-length":
                    value = value.strip()
                    if not (value.isascii() and value.isdigit() and len(value) <= 12) or (
                            seen_length is not None and seen_length != value):
                        bad = "bad Content-Length"
                        break
                    seen_length = value
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
            c.since = time.monotonic() if buf else None  # the next request's deadline starts now
            close = "close" in conn_hdr or (version == "HTTP/1.0" and "keep-alive" not in conn_hdr)
            try:
                status, ctype, payload = self._route(method, target, flavor, body, c.peer)
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

    def _route(self, method, target, flavor, body, peer="127.0.0.1"):
        path, dummy, query = target.partition("?")
        token, sep, rest = path[1:].partition("/")
        if not path.startswith("/") or not sep or not ("/" + rest).startswith(PREFIX):
            return 404, TEXT, b"not found: paths are /<token>/acMetadata/v1/..."
        if flavor != "AppContainer":
            return 400, TEXT, b"the Metadata-Flavor: AppContainer header is required"
        entry = self.by_token.get(token)
        if entry is None or not hmac.compare_digest(entry.token, token):
            return 401, TEXT, b"unknown token"
        # A token alone is a bearer secret that crosses the pod's link in clear: it counts
        # only from the pod's own addresses (anti-spoofing keeps those its own), or, for a
        # host-network pod, from loopback, which no private-network pod can reach.
        if not (_loopback(peer) if entry.addresses is None else peer in entry.addresses):
            return 403, TEXT, b"this token is not valid from this address"
        sub = ("/" + rest)[len(PREFIX):]
        if sub == "pod/hmac/sign" or sub == "pod/hmac/verify":
            if method != "POST":
                return 405, TEXT, b"use POST"
            try:  # parse_qs takes ASCII only: other bytes must come percent-encoded
                form = parse_qs(body, keep_blank_values=True)
                if query:
                    for k, v in parse_qs(query.encode("latin-1"), keep_blank_values=True).items():
                        form.setdefault(k, v)
            except ValueError:  # UnicodeDecodeError
                return 400, TEXT, b"the form is not ASCII: percent-encode other bytes"
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


def _die_with_parent(parent):
    """The service ends when its supervisor does, even by SIGKILL: stop() signals only the
    supervisor, whose PID is in ``pid``."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:  # it died before prctl
        os._exit(1)


def _serve(data_dir, address, port, ready):
    """The service itself (the supervisor's child): ready line on ``ready``, exit 0 on a
    stop, anything else when it failed."""
    try:
        service = Service(data_dir, address, port)
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
    try:
        service.rebuild()
        gc.freeze()  # what start-up made stays out of every collection: shorter pauses
        if ready >= 0:
            os.write(ready, b"ready %d %d\n" % (os.getpid(), service.port))
            os.close(ready)
        service.log("serving on port %d, %d pods registered" % (service.port, len(service.by_uuid)))
        service.serve(wake_r)
    finally:
        service.close()
        service.log("stopped")
    return 0


def _child_ready(r):
    """The child's ready line (``ready <pid> <port>`` or ``failed <why>``), "" when it died."""
    data = b""
    while not data.endswith(b"\n"):
        try:
            b = os.read(r, 4096)
        except InterruptedError:
            continue
        if not b:
            break
        data += b
    os.close(r)
    return data.decode("utf-8", "replace").strip()


def supervise(data_dir, address, port, ready):
    """Fork the service and fork it again when it dies (not when it was stopped), on the
    port it had, so pods' URLs stay valid; a stop (SIGTERM to this process, or the control
    socket's ``stop``) ends both. Quick successive deaths are spaced by RESTART_DELAYS."""
    state = {"child": 0, "stopping": False}

    def on_signal(signum, frame):
        state["stopping"] = True
        if state["child"]:
            try:
                os.kill(state["child"], signal.SIGTERM)
            except ProcessLookupError:
                pass

    for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(s, on_signal)
    me = os.getpid()
    pidfile = os.path.join(os.path.abspath(data_dir), "metadata", "pid")
    log_path = os.path.join(os.path.dirname(pidfile), "service.log")
    deaths = 0
    first = True
    try:
        while not state["stopping"]:
            r, w = os.pipe()
            started = time.monotonic()
            pid = os.fork()
            if pid == 0:  # the service
                code = 1
                try:
                    os.close(r)
                    _die_with_parent(me)
                    for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                        signal.signal(s, signal.SIG_DFL)
                    if ready >= 0:
                        os.close(ready)
                    code = _serve(data_dir, address, port, w)
                finally:
                    os._exit(code)
            state["child"] = pid
            if state["stopping"]:  # the signal came between fork and here
                os.kill(pid, signal.SIGTERM)
            os.close(w)
            line = _child_ready(r)
            parts = line.split()
            if first:
                if len(parts) == 3 and parts[0] == "ready":
                    port = int(parts[2])  # port 0: the one it took, from now on
                    _write_pidfile(pidfile)
                    if ready >= 0:
                        os.write(ready, b"ready %d %d\n" % (me, port))
                        os.close(ready)
                        ready = -1
                    first = False
                else:
                    if ready >= 0:
                        os.write(ready, (line if line.startswith("failed ") else "failed the service died at start")
                                 .encode("utf-8", "replace") + b"\n")
                    _reap(pid)
                    return 1
            elif not line.startswith("ready "):
                _log(log_path, "restart failed: %s" % (line or "the service died at start"))
            status = _reap(pid)
            state["child"] = 0
            if state["stopping"] or (os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0):
                break
            deaths = 0 if time.monotonic() - started > 30 else deaths + 1
            _log(log_path, "the service (pid %d) died (%s); starting it again" % (pid, _how(status)))
            time.sleep(RESTART_DELAYS[min(deaths, len(RESTART_DELAYS) - 1)])
    finally:
        if not first:
            try:
                with open(pidfile) as f:
                    mine = f.read().strip() == str(me)
                if mine:
                    os.unlink(pidfile)
            except OSError:
                pass
            try:
                os.unlink(os.path.join(os.path.dirname(pidfile), "control.sock"))
            except OSError:
                pass
    return 0


def _reap(pid):
    while True:
        try:
            return os.waitpid(pid, 0)[1]
        except InterruptedError:
            continue
        except ChildProcessError:
            return 0


def _how(status):
    if os.WIFSIGNALED(status):
        return "signal %d" % os.WTERMSIG(status)
    return "exit status %d" % os.WEXITSTATUS(status)


def main(argv):
    """``service.py --data-dir D [--address A] [--port P] [--ready-fd N] [--supervise=0]``

    ``--supervise=0`` runs the service alone (no restarts, no ``pid`` file): for debugging."""
    opts = {"--data-dir": "", "--address": "127.0.0.1", "--port": str(DEFAULT_PORT), "--ready-fd": "-1",
            "--supervise": "1"}
    for a in argv:
        k, sep, v = a.partition("=")
        if not sep or k not in opts:
            sys.stderr.write("usage: service.py --data-dir=D [--address=A] [--port=P] [--ready-fd=N] [--supervise=0]\n")
            return 2
        opts[k] = v
    ready = int(opts["--ready-fd"])
    try:
        if not opts["--data-dir"]:
            raise ValueError("--data-dir is required")
        port = int(opts["--port"])
    except ValueError as e:
        if ready >= 0:
            os.write(ready, ("failed %s\n" % e).encode("utf-8", "replace"))
        return 1
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    if opts["--supervise"] != "0":
        return supervise(opts["--data-dir"], opts["--address"], port, ready)
    return _serve(opts["--data-dir"], opts["--address"], port, ready)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

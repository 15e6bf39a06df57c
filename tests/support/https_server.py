"""A real HTTPS server on 127.0.0.1 for fetch tests, and a throw-away PKI made with openssl.

``Server`` serves ``Resource`` objects by path and records every request, so tests can
count them and look at their headers. Resources model what fetching has to cope with:
ETags and 304s, Cache-Control, Range/If-Range, redirects, basic auth, transient 503s, and a
connection cut in the middle of the body.
"""
import base64
import os
import ssl
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def make_pki(directory):
    """CA, server (127.0.0.1 / localhost) and client certificates; returns their paths."""
    d = str(directory)
    os.makedirs(d, exist_ok=True)

    def sh(*args):
        subprocess.run(["openssl"] + list(args), cwd=d, check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE, timeout=60)

    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    sh("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "3", "-subj", "/CN=rocket test CA",
       "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    for name, ext in (("server", "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n"),
                      ("client", "extendedKeyUsage=clientAuth\n")):
        with open(os.path.join(d, name + ".ext"), "w") as f:
            f.write("basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n"
                    "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid,issuer\n" + ext)
        sh("req", *ec, "-keyout", name + ".key", "-out", name + ".csr", "-subj", "/CN=rocket test " + name)
        sh("x509", "-req", "-in", name + ".csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
           "-out", name + ".pem", "-days", "3", "-extfile", name + ".ext")
    return {k: os.path.join(d, k + ".pem") for k in ("ca", "server", "client")} | \
        {k + "_key": os.path.join(d, k + ".key") for k in ("server", "client")}


class Resource:
    """What one path serves. ``body`` bytes or ``file`` path; the rest switches behaviours."""

    def __init__(self, body=None, file=None, etag=None, max_age=None, ranges=True, drop_after=None,
                 drops=1, status=200, headers=None, redirect=None, auth=None, fail_times=0,
                 content_type="application/octet-stream", last_modified=None, length=True):
        self.body = body
        self.file = file
        self.etag = etag
        self.max_age = max_age
        self.ranges = ranges
        self.drop_after = drop_after   # send this many body bytes, then cut the connection
        self.drops = drops             # ... this many times
        self.status = status
        self.headers = dict(headers or {})
        self.redirect = redirect
        self.auth = auth               # (user, password)
        self.fail_times = fail_times   # answer 503 this many times first
        self.content_type = content_type
        self.last_modified = last_modified
        self.length = length           # False: no Content-Length, the body ends when the connection does

    def data(self):
        if self.file is not None:
            with open(self.file, "rb") as f:
                return f.read()
        return self.body or b""


class _Handler(BaseHTTPRequestHandler):
    timeout = 10
    server_version = "rocket-test"

    def log_message(self, *args):
        pass

    def do_HEAD(self):
        self._serve(head=True)

    def do_GET(self):
        self._serve(head=False)

    def _serve(self, head):
        srv = self.server.owner
        path = self.path
        with srv.lock:
            srv.requests.append((self.command, path, dict(self.headers.items())))
            res = srv.routes.get(path)
            if res is None and "?" in path:
                res = srv.routes.get(path.split("?", 1)[0] + "?*")
        if res is None:
            return self._plain(404, b"not found\n", head)
        if res.fail_times > 0:
            res.fail_times -= 1
            return self._plain(503, b"try again\n", head, {"Retry-After": "0"})
        if res.auth is not None:
            want = "Basic " + base64.b64encode(("%s:%s" % res.auth).encode()).decode()
            if self.headers.get("Authorization") != want:
                return self._plain(401, b"who are you?\n", head, {"WWW-Authenticate": 'Basic realm="t"'})
        if res.redirect is not None:
            return self._plain(302, b"", head, {"Location": res.redirect})
        if res.status != 200:
            return self._plain(res.status, b"status\n", head)
        data = res.data()
        base = {"Content-Type": res.content_type}
        if res.etag:
            base["ETag"] = res.etag
        if res.last_modified:
            base["Last-Modified"] = res.last_modified
        if res.max_age is not None:
            base["Cache-Control"] = "max-age=%d" % res.max_age
        if res.ranges:
            base["Accept-Ranges"] = "bytes"
        base.update(res.headers)
        inm = self.headers.get("If-None-Match")
        if res.etag and inm and inm == res.etag:
            return self._plain(304, b"", True, base)
        start = 0
        rng = self.headers.get("Range")
        if rng and res.ranges and rng.startswith("bytes=") and rng.endswith("-"):
            if_range = self.headers.get("If-Range")
            if not if_range or if_range in (res.etag, res.last_modified):
                start = int(rng[6:-1])
        status = 200
        if start:
            status = 206
            base["Content-Range"] = "bytes %d-%d/%d" % (start, len(data) - 1, len(data))
        body = data[start:]
        self.send_response(status)
        for k, v in base.items():
            self.send_header(k, v)
        if res.length:
            self.send_header("Content-Length", str(len(body)))
        else:
            self.close_connection = True
        self.end_headers()
        if head:
            return
        if res.drop_after is not None and res.drops > 0 and not start:
            res.drops -= 1
            self.wfile.write(body[:res.drop_after])
            self.wfile.flush()
            self.close_connection = True
            import socket

            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        self.wfile.write(body)

    def _plain(self, status, body, head, headers=None):
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        if status != 304:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head and status != 304:
            self.wfile.write(body)


class Server:
    """An HTTPS (or with ``pki=None``, HTTP) server on 127.0.0.1 in a thread; a context manager."""

    def __init__(self, pki=None, client_ca=None):
        self.routes = {}
        self.requests = []
        self.lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.daemon_threads = False   # server_close() joins every request thread
        self.httpd.owner = self
        self.port = self.httpd.server_address[1]
        scheme = "http"
        if pki is not None:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(pki["server"], pki["server_key"])
            if client_ca:
                ctx.verify_mode = ssl.CERT_REQUIRED
                ctx.load_verify_locations(client_ca)
            self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
            scheme = "https"
        self.url = "%s://127.0.0.1:%d" % (scheme, self.port)
        self.url_localhost = "%s://localhost:%d" % (scheme, self.port)
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                       name="test-https-%d" % self.port, daemon=True)
        self.thread.start()

    def add(self, path, resource):
        with self.lock:
            self.routes[path] = resource
        return self.url + path

    def count(self, path=None, method=None):
        with self.lock:
            return sum(1 for m, p, dummy_headers in self.requests
                       if (path is None or p == path) and (method is None or m == method))

    def headers_of(self, path):
        with self.lock:
            return [h for dummy_method, p, h in self.requests if p == path]

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(10)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

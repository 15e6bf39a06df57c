"""One JSON line to a metadata service's control socket, as stage0 sends it (tests only:
they talk to a service they started, with no DataDir around it)."""
import json
import os
import socket


def call(data_dir, request, timeout=5.0):
    """The service's one-line JSON answer to ``request``, for the data directory's service."""
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(timeout)
    try:
        s.connect(os.path.join(str(data_dir), "metadata", "control.sock"))
        s.sendall(json.dumps(request).encode() + b"\n")
        buf = b""
        while not buf.endswith(b"\n"):
            b = s.recv(65536)
            if not b:
                break
            buf += b
    finally:
        s.close()
    return json.loads(buf)

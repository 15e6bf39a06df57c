"""The data directory: its layout, its mode and its format version.

One object knows every path under ``data_dir`` so the rest of the library never joins
strings by hand. The directory is 0700: trees hold setuid binaries and file capabilities
from untrusted images, and no unprivileged user may reach them.
"""
import os

from .errors import StoreError
from .fsutil import atomic_write, read_small

DEFAULT_DATA_DIR = "/var/lib/rocket"
FORMAT_NAME = "appc.rocket-data"
FORMAT_VERSION = 1

TYPE_CHECKING = False  # type checkers take it as true; typing costs milliseconds per start
if TYPE_CHECKING:
    from typing import Optional  # noqa: F401

POD_STATES = ("embryo", "prepare", "prepared", "run", "exited-garbage", "garbage")


class DataDir:
    def __init__(self, path: "Optional[str]" = None) -> None:
        self.path = os.path.abspath(path or DEFAULT_DATA_DIR)
        self.cas = os.path.join(self.path, "cas")
        self.blobs = os.path.join(self.cas, "blob", "sha512")
        self.manifests = os.path.join(self.cas, "manifest", "sha512")
        self.trees = os.path.join(self.cas, "tree")
        self.tmp = os.path.join(self.cas, "tmp")
        # Registry blobs (manifests, configs, layers) as received, by digest: registry_pull's cache.
        self.oci_blobs = os.path.join(self.cas, "oci", "blobs")
        self.index_path = os.path.join(self.cas, "index.db")
        self.locks = os.path.join(self.path, "locks")
        self.pods = os.path.join(self.path, "pods")
        self.names = os.path.join(self.path, "names")
        self.trust = os.path.join(self.path, "trust")
        self.format_path = os.path.join(self.path, "format")

    # -- paths ---------------------------------------------------------------------------
    def blob_path(self, image_id: str) -> str:
        return os.path.join(self.blobs, image_id[7:9], image_id)

    def manifest_path(self, image_id: str) -> str:
        return os.path.join(self.manifests, image_id[7:9], image_id)

    def oci_blob_path(self, digest: str) -> str:
        """``sha256:<hex>`` -> ``cas/oci/blobs/sha256/<hex>`` (the caller checked the digest)."""
        alg, dummy_sep, hexd = digest.partition(":")
        return os.path.join(self.oci_blobs, alg, hexd)

    def tree_path(self, key: str) -> str:
        return os.path.join(self.trees, key)

    def lock_path(self, name: str) -> str:
        return os.path.join(self.locks, name)

    def pod_state_dir(self, state: str) -> str:
        return os.path.join(self.pods, state)

    # -- creation and format -------------------------------------------------------------
    def exists(self) -> bool:
        return os.path.isfile(self.format_path)

    def check_format(self) -> None:
        """Refuse a data directory written by a newer, incompatible version."""
        try:
            text = read_small(self.format_path, 4096).decode("ascii", "replace").split()
        except FileNotFoundError:
            return
        except OSError as e:
            raise StoreError("cannot read %s: %s" % (self.format_path, e.strerror or e))
        if len(text) != 2 or text[0] != FORMAT_NAME or not text[1].isdigit():
            raise StoreError("%s is not an appc.rocket data directory (bad %s)" % (self.path, self.format_path))
        if int(text[1]) > FORMAT_VERSION:
            raise StoreError(
                "data directory %s has format %s, newer than this version of appc.rocket "
                "understands (%d): upgrade the collection" % (self.path, text[1], FORMAT_VERSION))

    def ensure(self) -> "DataDir":
        """Create the layout (idempotent); check the format of an existing one."""
        if self.exists():
            self.check_format()
            # Fast path: a complete layout needs no further syscalls.
            if os.path.isdir(self.tmp) and os.path.isdir(self.names):
                return self
        old = os.umask(0o077)
        try:
            os.makedirs(self.path, mode=0o700, exist_ok=True)
            st = os.lstat(self.path)
            if st.st_mode & 0o077:
                os.chmod(self.path, 0o700)
            for d in (self.blobs, self.manifests, self.trees, self.tmp, self.locks, self.trust, self.names):
                os.makedirs(d, mode=0o700, exist_ok=True)
            for s in POD_STATES:
                os.makedirs(self.pod_state_dir(s), mode=0o700, exist_ok=True)
            if not self.exists():
                atomic_write(self.format_path, ("%s %d\n" % (FORMAT_NAME, FORMAT_VERSION)).encode(), 0o600)
        finally:
            os.umask(old)
        return self

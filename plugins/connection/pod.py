# -*- coding: utf-8 -*-
# Copyright: appc.rocket developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
---
name: pod
short_description: Run tasks inside an app of a running App Container pod
description:
  - Runs Ansible's commands and modules inside an app of a pod that M(appc.rocket.pod_run)
    keeps running, through the pod's stage1 C(enter) entrypoint - with the app's
    namespaces, root, cgroups, user, capabilities and no-new-privileges, never more.
  - Locally (the default) the controller must be the pod's host and run as root (C(enter) joins namespaces).
  - Remotely (O(pod_host) set) it reaches the pod's host with Ansible's own C(ansible.builtin.ssh)
    connection, with the SSH variables of the host (C(ansible_host), C(ansible_user), C(ansible_port),
    C(ansible_ssh_private_key_file), C(ansible_ssh_common_args), C(ansible_ssh_extra_args), and
    C(ANSIBLE_SSH_ARGS) or C([ssh_connection]) settings). The host needs only C(python3) and the pods;
    the enter program is shipped on first use and kept in C(/var/cache/appc.rocket/enter) by content
    hash, root-owned, in directories only root can write.
  - Files are copied to and from the pod by commands running inside the app (C(cat)), so a
    path is resolved in the app's root only; a symbolic link in the image cannot point a
    write or a read at the host.
  - The image needs C(/bin/sh), C(cat) and the usual commands Ansible's shell plugin runs
    (C(mkdir), C(chmod), C(rm)), and a Python for modules.
version_added: "0.2.0"
author:
  - appc.rocket developers (@appc-rocket)
extends_documentation_fragment:
  - ansible.builtin.connection_pipelining
options:
  remote_addr:
    description:
      - The pod's name, or its UUID or an unambiguous prefix of it (local mode).
      - In remote mode C(ansible_host) is the pod host's address, and O(rocket_pod) names the pod.
    type: str
    default: inventory_hostname
    vars:
      - name: inventory_hostname
      - name: ansible_host
      - name: ansible_rocket_pod
  rocket_pod:
    description:
      - The pod in remote mode - its name, UUID or an unambiguous UUID prefix.
    type: str
    default: inventory_hostname
    version_added: "0.2.0"
    vars:
      - name: inventory_hostname
      - name: ansible_rocket_pod
  pod_host:
    description:
      - The pod's host, reached over SSH; unset, the controller is the pod's host (local mode).
      - The SSH destination is C(ansible_host) when set (the inventory plugin C(appc.rocket.pods) sets it
        to the host's address), else this name.
    type: str
    version_added: "0.2.0"
    vars:
      - name: ansible_rocket_pod_host
    env:
      - name: ANSIBLE_ROCKET_POD_HOST
  host_address:
    description:
      - The address SSH connects to in remote mode; defaults to O(pod_host).
    type: str
    version_added: "0.2.0"
    vars:
      - name: ansible_host
      - name: ansible_ssh_host
  host_user:
    description:
      - The SSH user on the pod's host. Entering a pod needs root there - this user is root, or
        O(host_sudo) is set.
    type: str
    version_added: "0.2.0"
    vars:
      - name: ansible_user
      - name: ansible_ssh_user
      - name: ansible_rocket_host_user
  host_port:
    description:
      - The SSH port of the pod's host.
    type: int
    version_added: "0.2.0"
    vars:
      - name: ansible_port
      - name: ansible_ssh_port
  host_private_key_file:
    description:
      - The SSH key for the pod's host.
    type: path
    version_added: "0.2.0"
    vars:
      - name: ansible_private_key_file
      - name: ansible_ssh_private_key_file
  host_ssh_common_args:
    description:
      - Extra arguments for every C(ssh) to the pod's host, as C(ansible_ssh_common_args) for ssh.
    type: str
    version_added: "0.2.0"
    vars:
      - name: ansible_ssh_common_args
  host_ssh_extra_args:
    description:
      - Extra arguments for C(ssh) to the pod's host, as C(ansible_ssh_extra_args) for ssh.
    type: str
    version_added: "0.2.0"
    vars:
      - name: ansible_ssh_extra_args
  host_sudo:
    description:
      - The root hop on the pod's host when O(host_user) is not root - run the enter program with
        C(sudo -n) there (password-less sudo for that user, at least for C(python3)).
    type: bool
    default: false
    version_added: "0.2.0"
    vars:
      - name: ansible_rocket_host_sudo
    env:
      - name: ANSIBLE_ROCKET_HOST_SUDO
  host_python:
    description:
      - The Python 3 on the pod's host that runs the enter program.
    type: str
    default: /usr/bin/python3
    version_added: "0.2.0"
    vars:
      - name: ansible_rocket_host_python
  rocket_app:
    description:
      - The app of the pod to run tasks in. Required when the pod has more than one app.
    type: str
    vars:
      - name: ansible_rocket_app
    env:
      - name: ANSIBLE_ROCKET_APP
    ini:
      - section: rocket_connection
        key: app
  rocket_user:
    description:
      - Run every command as this user of the app's image (C(user[:group]), names or numbers), as
        C(docker exec --user) and M(appc.rocket.pod_enter)'s O(appc.rocket.pod_enter#module:user) do -
        the change is the last step, under the app's own capabilities and seccomp filter, so a root
        app's commands become that user (without capabilities) and an app running as a user cannot
        become another. Unlike C(become), it needs no C(su) in the image.
      - Unset - the app's user.
    type: str
    version_added: "0.3.0"
    vars:
      - name: ansible_rocket_user
    env:
      - name: ANSIBLE_ROCKET_USER
    ini:
      - section: rocket_connection
        key: user
  data_dir:
    description:
      - The appc.rocket data directory holding the pod, on the pod's host.
    type: path
    default: /var/lib/rocket
    vars:
      - name: ansible_rocket_data_dir
    env:
      - name: ANSIBLE_ROCKET_DATA_DIR
    ini:
      - section: rocket_connection
        key: data_dir
  fetch_max_size:
    description:
      - The largest file C(fetch) (and other modules that fetch) may copy out of the pod, in bytes.
        A larger file fails the task with an error naming the file and this option; nothing of it is
        kept. Only regular files are fetched (not a FIFO or a device such as C(/dev/zero)).
      - V(0) removes the limit.
    type: int
    default: 1073741824
    version_added: "0.2.0"
    vars:
      - name: ansible_rocket_fetch_max_size
    env:
      - name: ANSIBLE_ROCKET_FETCH_MAX_SIZE
    ini:
      - section: rocket_connection
        key: fetch_max_size
notes:
  - The remote user is the app's user (or O(rocket_user)); O(remote_addr) names the pod, not a host.
  - C(become) works without a password from a privileged app to any user, for example
    C(become_method=su) with busybox's or util-linux's C(su) in the image. Apps run with
    no-new-privileges, so setuid programs (C(sudo), C(su) run by a non-root app) cannot gain
    privileges. An app that runs as an unprivileged user cannot become root.
  - A C(become) method that asks for a password is refused, as there is no terminal in the pod.
seealso:
  - module: appc.rocket.pod_run
  - module: appc.rocket.pod_enter
"""

EXAMPLES = r"""
# inventory.yml: pods of this host as hosts
# all:
#   hosts:
#     web:
#       ansible_connection: appc.rocket.pod
#       ansible_python_interpreter: /usr/bin/python3
#     db:
#       ansible_connection: appc.rocket.pod
#       ansible_host: 0f4a3c1e          # a UUID prefix instead of the name
#       ansible_rocket_app: postgres    # the pod has several apps
#       ansible_rocket_data_dir: /srv/rocket

- name: Configure the app inside the pod
  hosts: web
  gather_facts: true
  tasks:
    - name: Write its configuration
      ansible.builtin.template:
        src: app.conf.j2
        dest: /etc/app.conf
        owner: app
        mode: "0640"

    - name: Run a command as the app's unprivileged user
      ansible.builtin.command: id -un
      become: true
      become_method: ansible.builtin.su
      become_user: app
      changed_when: false
"""

import os
import shlex
import subprocess
import typing as t

from ansible.errors import AnsibleConnectionFailure, AnsibleError, AnsibleFileNotFound
from ansible.module_utils.common.text.converters import to_bytes, to_text
from ansible.plugins.connection import ConnectionBase
from ansible.plugins.loader import connection_loader
from ansible.utils.display import Display

from ansible_collections.appc.rocket.plugins.module_utils.stage0 import pod as podmod
from ansible_collections.appc.rocket.plugins.module_utils.stage0.datadir import DataDir
from ansible_collections.appc.rocket.plugins.module_utils.stage0.errors import AmbiguousError, NotFoundError, RocketError
from ansible_collections.appc.rocket.plugins.module_utils.stage0 import remote_enter
from ansible_collections.appc.rocket.plugins.module_utils.stage1.contract import EXIT_STAGE1

display = Display()

_PUT = 'cat > "$1"'
# Only a regular file: a FIFO would hang the task, a device such as /dev/zero never ends.
# (a missing file is left to cat, whose error says so).
_FETCH = '[ ! -e "$1" ] || [ -f "$1" ] || { echo "$1: not a regular file" >&2; exit 1; }; exec cat -- "$1"'


class Connection(ConnectionBase):
    """Commands and files go through the pod's stage1 enter entrypoint."""

    transport = "appc.rocket.pod"
    has_pipelining = True
    has_tty = False

    def __init__(self, *args: t.Any, **kwargs: t.Any) -> None:
        super().__init__(*args, **kwargs)
        self._pod = None
        self._app = None
        self._user = None
        self._ssh: t.Any = None  # remote mode: Ansible's ssh connection to the pod's host
        self._shipped = False

    def _remote(self) -> bool:
        return bool(self.get_option("pod_host"))

    # -- finding the pod --------------------------------------------------------------
    def _find_pod(self) -> "podmod.Pod":
        ref = self.get_option("remote_addr")
        if not ref:
            raise AnsibleConnectionFailure("appc.rocket.pod: no pod given (set ansible_host to a pod name or UUID)")
        dd = DataDir(self.get_option("data_dir"))
        try:
            return podmod.lookup_ref(dd, ref)
        except (AmbiguousError, NotFoundError) as e:
            raise AnsibleConnectionFailure("appc.rocket.pod: %s" % e) from None
        except RocketError as e:
            raise AnsibleConnectionFailure("appc.rocket.pod: pod %s in %s: %s" % (ref, dd.path, e)) from None

    def _connect(self) -> "Connection":
        if self._connected:
            return self
        if self._remote():
            return self._connect_remote()
        if os.geteuid() != 0:
            raise AnsibleConnectionFailure("appc.rocket.pod: entering a pod needs root on the controller, "
                                           "which must be the pod's host (running as uid %d)" % os.geteuid())
        pod = self._find_pod()
        state = pod.state()
        if state != "running":
            raise AnsibleConnectionFailure("appc.rocket.pod: pod %s (%s) is %s, not running; start it with "
                                           "appc.rocket.pod_run" % (self.get_option("remote_addr"), pod.uuid, state))
        try:
            app = podmod.choose_app(pod, self.get_option("rocket_app"), label=self.get_option("remote_addr"),
                                    hint="set ansible_rocket_app to one of them")
        except RocketError as e:
            raise AnsibleConnectionFailure("appc.rocket.pod: %s" % e) from None
        self._pod, self._app = pod, app
        display.vvv("ENTER POD %s (%s) APP %s" % (self.get_option("remote_addr"), pod.uuid, app), host=self._pod_label())
        self._connected = True
        return self

    def _connect_remote(self) -> "Connection":
        """Ansible's ssh connection, loaded and given the host's SSH settings; the pod is checked
        on the host by the enter program at each command (it may stop between tasks)."""
        if not self.get_option("rocket_pod"):
            raise AnsibleConnectionFailure("appc.rocket.pod: no pod given (set ansible_rocket_pod to a pod name or UUID)")
        ssh = connection_loader.get("ansible.builtin.ssh", self._play_context, None)
        if ssh is None:
            raise AnsibleConnectionFailure("appc.rocket.pod: cannot load the ansible.builtin.ssh connection")
        host = self.get_option("host_address") or self.get_option("pod_host")
        hop = {"ansible_host": host, "ansible_user": self.get_option("host_user"),
               "ansible_port": self.get_option("host_port"),
               "ansible_ssh_private_key_file": self.get_option("host_private_key_file"),
               "ansible_ssh_common_args": self.get_option("host_ssh_common_args"),
               "ansible_ssh_extra_args": self.get_option("host_ssh_extra_args"),
               "ansible_pipelining": True}
        ssh.set_options(var_options={k: v for k, v in hop.items() if v is not None})
        ssh.host = host
        self._ssh = ssh
        what = (self.get_option("rocket_pod"), self.get_option("pod_host"), host, self.get_option("rocket_app") or "-")
        display.vvv("POD %s ON HOST %s (%s) APP %s" % what, host=self._pod_label())
        self._connected = True
        return self

    def _pod_label(self) -> str:
        if self._remote():
            return "%s@%s" % (self.get_option("rocket_pod"), self.get_option("pod_host"))
        return to_text(self.get_option("remote_addr"))

    # -- remote mode ----------------------------------------------------------------
    def _remote_cmd(self, argv: t.List[str], digest: str) -> str:
        """The host's command line: the cached enter program, through sudo when asked."""
        words = [self.get_option("host_python"), "-I", "-c", remote_enter.BOOTSTRAP, digest,
                 self.get_option("data_dir"), self.get_option("rocket_pod"), self.get_option("rocket_app") or "",
                 self.get_option("rocket_user") or ""] + argv
        if self.get_option("host_sudo"):
            words = ["sudo", "-n", "--"] + words
        return " ".join(shlex.quote(to_text(w)) for w in words)

    def _ship(self, digest: str, blob: bytes) -> None:
        words = [self.get_option("host_python"), "-I", "-c", remote_enter.INSTALL, digest]
        if self.get_option("host_sudo"):
            words = ["sudo", "-n", "--"] + words
        display.vvv("SHIP enter program %s" % digest, host=self._pod_label())
        rc, dummy, stderr = self._ssh.exec_command(" ".join(shlex.quote(to_text(w)) for w in words),
                                                   in_data=blob, sudoable=False)
        if rc != 0:
            raise AnsibleConnectionFailure("appc.rocket.pod: cannot ship the enter program to %s: %s"
                                           % (self.get_option("pod_host"), _last_line(stderr) or "exit %d" % rc))
        self._shipped = True

    def _missing(self, rc: int, stderr: bytes) -> bool:
        return rc == remote_enter.EXIT_MISSING and _last_line(stderr) == remote_enter.MISSING

    def _remote_exec(self, argv: t.List[str], in_data: bytes) -> t.Tuple[int, bytes, bytes]:
        self._connect()
        blob, digest = _bundle()
        for attempt in (1, 2):
            rc, stdout, stderr = self._ssh.exec_command(self._remote_cmd(argv, digest), in_data=in_data, sudoable=False)
            if not self._missing(rc, stderr) or stdout or attempt == 2 or self._shipped:
                break
            self._ship(digest, blob)
        if not self._missing(rc, stderr):
            self._shipped = True
        return rc, stdout, stderr

    def _remote_popen(self, argv: t.List[str], stdin: t.Any, stdout: t.Any) -> subprocess.Popen:
        """An ssh process built by Ansible's ssh connection (its options, keys, control path)
        whose standard streams are the caller's: a file streams through it, never held whole."""
        self._connect()
        blob, digest = _bundle()
        if not self._shipped:  # a cheap round trip, so that a missing program never costs a re-sent file
            rc, dummy, stderr = self._remote_exec(["/bin/sh", "-c", ":"], b"")
            self._check_enter(rc, stderr)
        ssh = self._ssh
        cmd = ssh._build_command(ssh.get_option("ssh_executable"), "ssh", ssh.host, self._remote_cmd(argv, digest))
        kwargs: t.Dict[str, t.Any] = {}
        if ssh.sshpass_pipe:
            kwargs["pass_fds"] = ssh.sshpass_pipe
        p = subprocess.Popen(cmd, stdin=stdin, stdout=stdout, stderr=subprocess.PIPE, **kwargs)
        if ssh.sshpass_pipe:
            r, w = ssh.sshpass_pipe
            os.close(r)
            os.write(w, to_bytes(ssh.get_option("password") or "") + b"\n")
            os.close(w)
            ssh.sshpass_pipe = None
        return p

    @property
    def default_user(self) -> t.Optional[str]:
        """The app's user name (or rocket_user's): Ansible's remote user, which decides how
        become fixes permissions."""
        if self.get_option("rocket_user"):
            return self.get_option("rocket_user").partition(":")[0]
        if self._remote():
            return None  # the app's user is known on the host only; Ansible then uses the SSH user
        if self._user is None:
            try:
                self._connect()
                self._user = _app_user(self._pod, self._app)
            except (OSError, ValueError, AnsibleError):
                return None
        return self._user

    # -- running things ---------------------------------------------------------------
    def _popen(self, argv: t.List[str], stdin: t.Any, stdout: t.Any) -> subprocess.Popen:
        from ansible_collections.appc.rocket.plugins.module_utils.stage0.enter import command
        from ansible_collections.appc.rocket.plugins.module_utils.stage0.run import moved_error

        self._connect()
        try:
            cmd, env, cwd = command(self._pod, self._app, argv, user=self.get_option("rocket_user"))
            try:
                return subprocess.Popen(cmd, cwd=cwd, env=env, stdin=stdin, stdout=stdout, stderr=subprocess.PIPE)
            except OSError:  # its chdir: the pod exited and was collected, or was removed, meanwhile
                err = moved_error(self._pod)
                if err is None:
                    raise
                raise err from None
        except RocketError as e:
            raise AnsibleConnectionFailure("appc.rocket.pod: %s: %s" % (self._pod_label(), e)) from None

    def _any_popen(self, argv: t.List[str], stdin: t.Any, stdout: t.Any) -> subprocess.Popen:
        return self._remote_popen(argv, stdin, stdout) if self._remote() else self._popen(argv, stdin, stdout)

    def _check_enter(self, rc: int, stderr: bytes) -> None:
        """enter's own failures (not the command's) are connection failures."""
        if self._remote():
            if rc == 255:  # ssh's own failure: the host is unreachable
                raise AnsibleConnectionFailure("appc.rocket.pod: ssh to %s failed: %s"
                                               % (self.get_option("pod_host"), _last_line(stderr)))
            # the host's enter program reports in its last line; ssh may have written warnings before it
            if rc == EXIT_STAGE1 and _last_line(stderr).startswith("enter: "):
                raise AnsibleConnectionFailure("appc.rocket.pod: cannot enter pod %s app %s: %s"
                                               % (self._pod_label(), self.get_option("rocket_app") or "-",
                                                  _last_line(stderr)))
            return
        # EXIT_STAGE1: enter's own failure (the pod or app went away, a namespace could not be joined).
        if rc == EXIT_STAGE1 and stderr.startswith(b"enter: "):
            raise AnsibleConnectionFailure("appc.rocket.pod: cannot enter pod %s app %s: %s"
                                           % (self._pod_label(), self._app, to_text(stderr.strip())))
        if rc in (128 + 9, 128 + 15) and self._pod is not None and self._app is not None:
            from ansible_collections.appc.rocket.plugins.module_utils.stage0.enter import vanished

            if not vanished(self._pod, self._app, None, rc):
                return
            raise AnsibleConnectionFailure("appc.rocket.pod: app %s of pod %s exited while a command ran in it"
                                           % (self._app, self._pod_label()))

    def exec_command(self, cmd: str, in_data: t.Optional[bytes] = None, sudoable: bool = True) -> t.Tuple[int, bytes, bytes]:
        super().exec_command(cmd, in_data=in_data, sudoable=sudoable)
        if sudoable and self.become and self.become.expect_prompt():
            raise AnsibleError("appc.rocket.pod: become with a password is not supported (no terminal in a pod); "
                               "become from a privileged app needs none")
        executable = self._play_context.executable or "/bin/sh"
        display.vvv("EXEC %s" % cmd, host=self._pod_label())
        if self._remote():
            rc, stdout, stderr = self._remote_exec([executable, "-c", cmd], in_data or b"")
            self._check_enter(rc, stderr)
            return rc, stdout, stderr
        p = self._popen([executable, "-c", cmd], subprocess.PIPE, subprocess.PIPE)
        stdout, stderr = p.communicate(in_data or b"")
        self._check_enter(p.returncode, stderr)
        return p.returncode, stdout, stderr

    def put_file(self, in_path: str, out_path: str) -> None:
        super().put_file(in_path, out_path)
        display.vvv("PUT %s TO %s" % (in_path, out_path), host=self._pod_label())
        b_in = to_bytes(in_path, errors="surrogate_or_strict")
        if not os.path.isfile(b_in):
            raise AnsibleFileNotFound("file or module does not exist: %s" % in_path)
        with open(b_in, "rb") as f:
            p = self._any_popen(["/bin/sh", "-c", _PUT, "put_file", out_path], f, subprocess.DEVNULL)
            dummy, stderr = p.communicate()
        self._check_enter(p.returncode, stderr)
        if p.returncode != 0:
            raise AnsibleError("appc.rocket.pod: failed to write %s in pod %s: %s"
                               % (out_path, self._pod_label(), to_text(stderr.strip())))

    def fetch_file(self, in_path: str, out_path: str) -> None:
        super().fetch_file(in_path, out_path)
        display.vvv("FETCH %s TO %s" % (in_path, out_path), host=self._pod_label())
        b_out = to_bytes(out_path, errors="surrogate_or_strict")
        limit = int(self.get_option("fetch_max_size") or 0)
        try:
            with open(b_out, "wb") as f:
                p = self._any_popen(["/bin/sh", "-c", _FETCH, "fetch_file", in_path], subprocess.DEVNULL,
                                    subprocess.PIPE)
                if not _copy_capped(p, f, limit):
                    raise AnsibleError("appc.rocket.pod: %s in pod %s is larger than fetch_max_size (%d bytes); "
                                       "raise it (ansible_rocket_fetch_max_size, 0 for no limit) to fetch it"
                                       % (in_path, self._pod_label(), limit))
                stderr = p.stderr.read()
                p.wait()
        except BaseException:
            _unlink(b_out)
            raise
        if p.returncode != 0:
            _unlink(b_out)
        self._check_enter(p.returncode, stderr)
        if p.returncode != 0:
            raise AnsibleError("appc.rocket.pod: failed to read %s in pod %s: %s"
                               % (in_path, self._pod_label(), to_text(stderr.strip())))

    def close(self) -> None:
        if self._ssh is not None:
            self._ssh.close()
            self._ssh = None
        self._connected = False
        self._pod = None


_BUNDLE: t.Optional[t.Tuple[bytes, str]] = None


def _bundle() -> t.Tuple[bytes, str]:
    """The enter program and its hash, built once per controller process."""
    global _BUNDLE  # pylint: disable=global-statement
    if _BUNDLE is None:
        _BUNDLE = remote_enter.bundle()
    return _BUNDLE


def _last_line(data: bytes) -> str:
    lines = to_text(data, errors="surrogate_or_replace").strip().splitlines()
    return lines[-1].strip() if lines else ""


def _copy_capped(p: subprocess.Popen, out: t.BinaryIO, limit: int) -> bool:
    """Copy p's stdout to out; False (p killed and reaped) once more than limit bytes came."""
    total = 0
    while True:
        chunk = p.stdout.read1(1 << 16) if p.stdout else b""
        if not chunk:
            return True
        total += len(chunk)
        if limit and total > limit:
            p.kill()  # and closing the pipe ends a forked command inside the pod (SIGPIPE)
            p.stdout.close()
            p.wait()
            return False
        out.write(chunk)


def _unlink(path: bytes) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _app_user(pod: "podmod.Pod", app: str) -> str:
    """The name of the uid the app runs as, from the app's own /etc/passwd, read inside its root."""
    from ansible_collections.appc.rocket.plugins.module_utils.stage1 import users

    with open(pod.file("apps", app, "pid")) as f:
        pid = int(f.read().strip())
    with open("/proc/%d/status" % pid) as f:
        uid = next(int(line.split()[1]) for line in f if line.startswith("Uid:"))
    if uid == 0:
        return "root"
    try:
        entries = users.read_db_in("/proc/%d/root" % pid, "/etc/passwd")
    except (OSError, ValueError):
        return str(uid)
    return users.user_name(entries, uid) or str(uid)

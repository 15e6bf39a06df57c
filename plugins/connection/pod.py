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
  - The controller must be the pod's host and run as root (C(enter) joins namespaces).
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
      - The pod's name, or its UUID or an unambiguous prefix of it.
    type: str
    default: inventory_hostname
    vars:
      - name: inventory_hostname
      - name: ansible_host
      - name: ansible_rocket_pod
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
  data_dir:
    description:
      - The appc.rocket data directory holding the pod (on the controller, which is the pod's host).
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
  - The remote user is the app's user; O(remote_addr) names the pod, not a host.
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
import subprocess
import typing as t

from ansible.errors import AnsibleConnectionFailure, AnsibleError, AnsibleFileNotFound
from ansible.module_utils.common.text.converters import to_bytes, to_text
from ansible.plugins.connection import ConnectionBase
from ansible.utils.display import Display

from ansible_collections.appc.rocket.plugins.module_utils.stage0 import pod as podmod
from ansible_collections.appc.rocket.plugins.module_utils.stage0.datadir import DataDir
from ansible_collections.appc.rocket.plugins.module_utils.stage0.errors import AmbiguousError, NotFoundError, RocketError
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

    def _pod_label(self) -> str:
        return to_text(self.get_option("remote_addr"))

    @property
    def default_user(self) -> t.Optional[str]:
        """The app's user name: Ansible's remote user, which decides how become fixes permissions."""
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
            cmd, env, cwd = command(self._pod, self._app, argv)
            try:
                return subprocess.Popen(cmd, cwd=cwd, env=env, stdin=stdin, stdout=stdout, stderr=subprocess.PIPE)
            except OSError:  # its chdir: the pod exited and was collected, or was removed, meanwhile
                err = moved_error(self._pod)
                if err is None:
                    raise
                raise err from None
        except RocketError as e:
            raise AnsibleConnectionFailure("appc.rocket.pod: %s: %s" % (self._pod_label(), e)) from None

    def _check_enter(self, rc: int, stderr: bytes) -> None:
        """enter's own failures (not the command's) are connection failures."""
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
            p = self._popen(["/bin/sh", "-c", _PUT, "put_file", out_path], f, subprocess.DEVNULL)
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
                p = self._popen(["/bin/sh", "-c", _FETCH, "fetch_file", in_path], subprocess.DEVNULL,
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
        self._connected = False
        self._pod = None


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

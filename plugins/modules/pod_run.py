#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: appc.rocket developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
---
module: pod_run
short_description: Keep an App Container pod running (or run it to completion, or remove it)
description:
  - Converges the pod of a name to the declared apps, volumes and options - prepares it from
    images in the store and runs it under a keeper process, like C(rkt run) made idempotent.
  - The declared spec is compared with the pod on disk field by field, and with the image IDs
    the references resolve to now. The same task twice reports no change. A changed option
    replaces the pod, and RV(reasons) says which fields changed.
  - A pod that exited is not restarted in place (a pod runs once); a new pod with the same
    spec replaces it.
version_added: "0.1.0"
author:
  - appc.rocket developers (@appc-rocket)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - appc.rocket.data_dir
  - appc.rocket.pod_options
options:
  state:
    description:
      - V(running) keeps the pod running.
      - V(exited) runs the pod once to completion (a job) or stops it when it runs.
      - V(absent) stops and removes the pod.
      - V(healthy) is V(running), and the task then waits (up to O(wait_timeout), without a limit when
        unset - the checks always end in a verdict) until every app with a healthcheck is C(healthy); it
        fails with the probe's output as soon as one is C(unhealthy), or when the pod stops, or at the
        timeout. Not with O(wait). A pod none of whose apps has a check fails.
    type: str
    choices: [running, exited, absent, healthy]
    default: running
  wait:
    description: With O(state=running), wait until the pod exits and return each app's exit code and output.
    type: bool
    default: false
  wait_timeout:
    description: Seconds to wait for the pod to exit (with O(wait) or O(state=exited)), or to be healthy (O(state=healthy)); no limit when unset.
    type: int
  stop_timeout:
    description:
      - Seconds between the apps' stop signal (O(stop_signal), SIGTERM by default) and SIGKILL when
        the pod is stopped or replaced, for every app without its own C(apps[].stop_timeout) (an
        app's own wins).
    type: int
    default: 10
  restart:
    description: Replace a running pod even when nothing changed.
    type: bool
    default: false
  paused:
    description:
      - V(true) pauses a running pod, as docker's C(paused) - every process of its apps stops where it
        is (the cgroup v2 freezer), memory and network state kept - and V(false) resumes it. Unset leaves
        it as it is; a pod this task starts or replaces is paused once it runs.
      - Pausing or resuming is a change of its own, never a replacement; the pod's C(paused) says which
        it is.
      - Only with O(state=running) and without O(wait).
      - A paused pod is still stopped and removed as usual (it is resumed first, so its apps get their
        stop signal); its health checks are skipped while it is paused; M(appc.rocket.pod_enter) and the
        connection refuse to enter it. A reboot ends a pause (a pod brought back by O(boot) runs).
      - Needs a cgroup2 hierarchy (a cgroup-v2 or hybrid host) and Linux 5.2 or later.
    type: bool
  restart_policy:
    description:
      - What the keeper does when the pod exits, as docker's and podman's C(--restart) - V(no),
        V(always), V(on-failure) (a non-zero exit), V(on-failure:N) (at most N restarts, as
        O(restart_retries)) or V(unless-stopped).
      - A stop by the user (O(state=exited), a replacement) never triggers a restart. When a keeper
        is started again on an exited pod (a keeper that died, or a boot-time restore), V(always)
        brings the pod back even after a user's stop, V(unless-stopped) only when the user did not
        stop it, V(on-failure) only when its last run failed and retries are left (docker's rules).
      - The pod's RV(pod.restart) shows the policy, the restarts so far and whether the user stopped it.
      - A change replaces the pod.
    type: str
    default: 'no'
  boot:
    description:
      - Bring the pod back when its host boots, whatever O(restart_policy) says - with the same UUID,
        volumes, addresses and data, before or without any playbook run (C(appc-rocket-pods.service),
        which the M(appc.rocket.runtime) role installs on systemd hosts; see C(docs/reboots.md)).
      - Only a pod that was running when the host went down comes back (a power cut, or a shutdown that
        stopped it); a pod that exited on its own or was stopped by the user stays exited.
        A O(restart_policy) other than V(no) brings pods back at boot too, by its own rules.
      - A change replaces the pod.
    type: bool
    default: false
  restart_retries:
    description: With O(restart_policy=on-failure), the most restarts (0, the default, for no cap).
    type: int
  restart_delay:
    description:
      - Seconds before the first restart (default 1); each quick exit doubles it up to
        O(restart_max_delay). A run that lasted more than 10 seconds starts over at this delay.
    type: float
  restart_max_delay:
    description: The longest wait between restarts, in seconds (default 60).
    type: float
  net:
    description:
      - V(host) shares the host's network; V(none) gives the pod only a loopback interface.
      - Anything else is a list of private networks to join, in order (C(eth0), C(eth1), ...) -
        V(default) (built in - point-to-point, 172.16.28.0/24, egress NAT) or networks defined in
        C(<data_dir>/net.d/*.json) or C(/etc/rocket/net.d/*.json) (see C(docs/networking.md)).
      - A private network turns on IPv4 forwarding on the host (C(net.ipv4.ip_forward=1)) and needs
        the C(nft) command (Debian package C(nftables)).
      - A change restarts the pod.
    type: list
    elements: str
    default: [host]
  dns:
    description:
      - Nameservers of the pod's C(/etc/resolv.conf) on private networks. By default the host's,
        without loopback ones (a local stub resolver cannot be reached from a pod); when none is
        left, those of C(/run/systemd/resolve/resolv.conf), else 8.8.8.8 and 8.8.4.4.
    type: list
    elements: str
  hostname:
    description:
      - The pod's host name (default - C(rkt-) and the first 8 characters of its UUID), at most 64
        characters; dot-separated labels of letters, digits, C(-) and C(_), since it also goes into
        the pod's C(/etc/hosts) and what its peers read. A bad name is refused before anything changes.
    type: str
  domainname:
    description:
      - The pod's NIS domain name (C(domainname), C(uname -a)'s), as docker's C(domainname); the same
        rules as O(hostname). Unset - none, the kernel's C((none)).
      - Like O(hostname), it is compared only when given, and a change replaces the pod.
    type: str
  ip:
    description:
      - A fixed IPv4 address of the pod on the first network of O(net); it must be a host address of
        that network's subnet other than its gateway (checked before anything changes, also in check
        mode), and no other pod may hold it (checked when the pod starts).
      - A change restarts the pod (as for every option below).
    type: str
  ip6:
    description: A fixed IPv6 address on the first network of O(net), which needs C(subnet6) (a dual-stack network).
    type: str
  mac:
    description: The MAC address of the pod's interface on the first network of O(net) (unicast; default - derived from the UUID).
    type: str
  dns_search:
    description: Search domains of the pod's C(/etc/resolv.conf) on private networks (at most 6; default - the host's).
    type: list
    elements: str
  dns_options:
    description: Resolver options (C(options) line, e.g. V(ndots:2)) on private networks (default - the host's).
    type: list
    elements: str
  extra_hosts:
    description: More lines for the pod's C(/etc/hosts) on private networks - host name to IPv4 or IPv6 address.
    type: dict
  hostname_aliases:
    description: More names for the pod's own address in its C(/etc/hosts), after O(hostname).
    type: list
    elements: str
  cgroup_parent:
    description:
      - The cgroup the pod's cgroups go under, as docker's and podman's C(cgroup_parent) - a path below
        each hierarchy's root (C(/sys/fs/cgroup) and each v1 controller's), such as C(pods) or
        C(machine.slice/pods). Unset - C(rocket), so a pod's cgroup is C(rocket/<uuid>).
      - Missing levels are made (on cgroup v2 each gets the controllers the pod uses); they stay when the
        pod is removed, as a parent the user names is theirs. Limits set on them hold for every pod below.
      - Relative, of letters, digits and C(_ - . @ :), without C(.) or C(..), interface file names
        (C(cgroup.*)) or UUIDs (a pod's own cgroup), all refused before anything changes.
      - Under a systemd slice, systemd does not manage the pods (nothing is delegated through D-Bus).
      - A change replaces the pod.
    type: str
  private_users:
    description:
      - Run the pod's apps in a user namespace, so that root in the pod is an unprivileged user on the host.
      - V(false) - no shifted range - the apps still run in a user namespace, with every id mapped to itself,
        so that a host user with an app's uid cannot read its environment or root through /proc.
      - V(true) - 65536 host uids and gids from 2147483648 up, picked per pod name from a store in O(data_dir)
        (the same name gets the same range again, so its volumes keep their owners).
      - A number - the first host id of the range, as given (keep it apart from other users of host ids yourself).
      - The image's files keep their owners inside the pod (idmapped layers); host volumes are not shifted -
        files the pod's root creates there belong to the range's first id on the host.
      - A change restarts the pod. See docs/isolation.md.
    type: raw
    default: false
  debug:
    description: Ask stage1 to log what it does (to the pod's stage1 log).
    type: bool
    default: false
  metadata_service:
    description:
      - Serve the appc metadata service to the pod's apps - C(AC_METADATA_URL) with a token only this
        pod knows; the data directory's service is started when it is not running.
      - Needs O(net=host) or a private network. A change replaces the running pod.
      - On a private network the token answers only from the pod's own addresses; with O(net=host)
        it answers from the host's loopback. The service never serves the values of O(secret_environment).
    type: bool
    default: false
  metadata_port:
    description:
      - TCP port of the metadata service when this task has to start it (V(0) takes any free port).
        A running service keeps its port; it moves only when it serves no pod.
    type: int
    default: 18112
  log_driver:
    description:
      - Where the apps' output goes (stdout and stderr share one pipe per app; each line is kept with its time).
      - V(file) - C(logs/<app>.log) in the pod's directory, rotated as O(log_max_size) and O(log_max_files) say.
      - V(journald) - the host's systemd journal (native protocol), one entry per line with
        C(SYSLOG_IDENTIFIER=<pod name>/<app>), C(APPC_POD_UUID), C(APPC_POD_NAME) and C(APPC_APP), so that
        C(journalctl -t web/nginx) or C(journalctl APPC_POD_NAME=web) finds them; the journal rotates them.
        Needs systemd-journald on the host (the task fails naming this option when its socket is missing).
        While journald does not take a line, the line goes to the file instead, with a note.
      - RV(pod.apps[].log) (and M(appc.rocket.pod_info)'s) shows the last lines with both. See C(docs/logs.md).
      - A change replaces the pod (as every O(log_driver), O(log_max_size) and O(log_max_files) change).
    type: str
    choices: [file, journald]
    default: file
  log_max_size:
    description:
      - With O(log_driver=file), the size at which an app's log file rotates (default C(1m)), as C(10m),
        C(512k) (binary units) or bytes; at least C(4k).
    type: raw
  log_max_files:
    description:
      - With O(log_driver=file), the files an app's log keeps in all, the current one included (default 2 -
        C(<app>.log) and C(<app>.log.1)); V(1) empties the file when it is full. At most 100.
    type: int
  fail_on_app_error:
    description: After waiting, fail the task when an app exited with a non-zero status.
    type: bool
    default: true
attributes:
  check_mode:
    support: full
    details:
      - Computes the same comparison and reports what would change; imports, prepares, runs and stops nothing.
      - An image that an earlier task would import is reported as a change.
  diff_mode:
    support: full
    details: Shows only the fields that differ (secret values redacted).
  platform:
    platforms: posix
    details: Linux, as root.
notes:
  - Runs on the target host with Python 3.8 or newer and its standard library.
  - Ansible gives a module no terminal, so interactive pods are not offered here; the library's
    C(run_foreground(interactive=True)) is for that.
  - Pods do not come back after a reboot by themselves, with or without systemd; a second run of
    the playbook brings them back (pods whose processes are gone are seen as exited). The
    runtime role can install a boot unit that runs that playbook (roles/runtime/README.md).
seealso:
  - module: appc.rocket.pod_prepare
  - module: appc.rocket.pod_info
  - module: appc.rocket.pod_enter
"""

EXAMPLES = r"""
- name: Keep a web pod running
  appc.rocket.pod_run:
    name: web
    image: example.com/nginx:1.25
    volumes:
      - {name: html, kind: host, source: /srv/html, read_only: true}
    mounts:
      - {volume: html, path: /usr/share/nginx/html}
    restart_policy: always

- name: Run a job once and collect its output
  appc.rocket.pod_run:
    name: migrate
    image: example.com/app:2.0
    exec: [/app/migrate, --yes]
    secret_environment:
      DB_PASSWORD: "{{ vault_db_password }}"
    state: exited
  register: job

- name: Two apps sharing a volume
  appc.rocket.pod_run:
    name: pipeline
    apps:
      - {image: example.com/producer, mounts: [{volume: spool, path: /spool}]}
      - {image: example.com/consumer, mounts: [{volume: spool, path: /spool}]}
    volumes:
      - {name: spool}

- name: A pod whose root is not root on the host, with a seccomp remove-set and a sysctl
  appc.rocket.pod_run:
    name: sandboxed
    image: example.com/app:2.0
    private_users: true
    net: none
    isolators:
      - name: os/linux/seccomp-remove-set
        value: {set: ["@rocket/default-remove-set", "chmod", "fchmodat"], errno: EPERM}
      - name: os/unix/sysctl
        value: {kernel.shmmni: "8192"}

- name: A pod whose apps read their annotations and sign with the metadata service
  appc.rocket.pod_run:
    name: identity
    image: example.com/worker:1.0
    annotations: {role: worker}
    metadata_service: true

- name: A web server on the default private network, its port 80 on the host's 8080
  appc.rocket.pod_run:
    name: web
    image: example.com/nginx:1.25
    net: default
    ports:
      - {name: http, host_port: 8080}
      - {port: 443, host_port: 8443, host_ip: 127.0.0.1}

- name: Remove it
  appc.rocket.pod_run:
    name: web
    state: absent
"""

RETURN = r"""
pod:
  description:
    - The pod after the task. Empty when there is none.
    - With O(state=absent), empty; in check mode, the C(uuid) and C(name) of the pod that would be removed.
    - In check mode, empty when a new pod would be made; the current pod when it would only be started or stopped.
  returned: always
  type: dict
  contains:
    uuid:
      description: The pod's UUID.
      returned: always
      type: str
      sample: 5b2c0a7e-8a55-4f0b-9d1e-3f6a2c1d4e70
    name:
      description: The pod's name (null for a pod that has none).
      returned: always
      type: str
      sample: web
    state:
      description: V(prepared), V(running), V(exited), V(exited-garbage), V(garbage) or V(aborted).
      returned: always
      type: str
      sample: running
    paused:
      description: Whether the pod is paused (O(appc.rocket.pod_run#module:paused) of M(appc.rocket.pod_run)); V(false) unless it is running.
      returned: always
      type: bool
      sample: false
    hostname:
      description:
        - The host name the pod last started with - O(appc.rocket.pod_run#module:hostname), or C(rkt-) and the first
          8 hex digits of its UUID by default. Null until it has started.
      returned: always
      type: str
      sample: rkt-5b2c0a7e
    domainname:
      description: The NIS domain name the pod last started with (O(appc.rocket.pod_run#module:domainname)); null when none.
      returned: always
      type: str
    pid:
      description: Host PID of the pod's PID 1; null unless the pod is running.
      returned: always
      type: int
    lsm:
      description:
        - The LSM profile the apps run under - C(unconfined) (stage1 sets no AppArmor or SELinux label).
        - Null until the pod has run.
      returned: always
      type: str
    created:
      description: When the pod was prepared (seconds since the epoch).
      returned: always
      type: float
    started:
      description: When the pod was started (seconds since the epoch); null if it never was.
      returned: always
      type: float
    exit_code:
      description: The pod's exit status; null until it has exited.
      returned: always
      type: int
    restart:
      description:
        - The keeper's restart rule and record - C(policy) (V(no), V(always), V(on-failure),
          V(unless-stopped); null before the pod ran detached), C(retries) (on-failure's cap, 0 for none),
          C(count) (restarts so far, those of keepers started again included) and C(stopped_by_user)
          (the user stopped it - V(unless-stopped) then stays stopped when a keeper is started again).
      returned: always
      type: dict
    apps:
      description: The pod's apps, in the order of its manifest.
      returned: always
      type: list
      elements: dict
      contains:
        name:
          description: The app's name in the pod.
          type: str
        image_id:
          description: The ID of the image the app runs.
          type: str
        exit_code:
          description: The app's exit status; null until it has exited.
          type: int
        signal:
          description: The signal that ended the app, when one did.
          type: int
        error:
          description:
            - Why the app could not be started, when it could not.
            - For an app with no recorded status in a pod that ran and ended with nobody to record its end,
              the cause as far as it can be told - its PID 1 was killed (SIGKILL, the OOM killer, or the stop
              after its timeout; C(signal) is then 9) or the host went down.
          type: str
        started:
          description: When the app started (seconds since the epoch); null before.
          type: float
        finished:
          description: When the app exited (seconds since the epoch); null before.
          type: float
        oom_killed:
          description: Whether the kernel's OOM killer ended the app (its memory limit was hit).
          type: bool
        isolation:
          description:
            - Once the pod ran, the isolators C(enforced), those C(ignored) with a C(reason) each, the C(seccomp)
              filter (C(mode), C(set), C(errno), C(source) - C(default) or C(isolator)), C(sysctls),
              C(no_new_privileges), C(capabilities) (the bounding set, by name), C(privileged),
              C(user_namespace) (C(uid_base), C(gid_base), C(size)), C(lsm) and C(limits) (the resource limits the
              app asks for, by option name - C(memory), C(pids_limit), C(ulimits)...; whether each holds is in
              C(enforced) and C(ignored)).
            - C(proc_guard), whether the app runs in a Landlock domain of its own, so that the pod's other apps
              cannot reach its processes through /proc or ptrace - C(enforced), C(abi) and C(by) (C(landlock)), or
              C(enforced=false) with a C(reason) (a host without Landlock, an app that may hold CAP_SYS_ADMIN or
              CAP_SYS_PTRACE).
            - C(mounts), one per volume mount - C(volume), C(path), C(kind) (C(host), C(empty), C(named), C(tmpfs)),
              C(source), C(read_only), C(propagation), C(nodev); a tmpfs's C(size), C(mode), C(uid), C(gid), C(nosuid);
              a named volume's C(volume_name) and C(idmapped).
          type: dict
        health:
          description:
            - Only for an app with a healthcheck, once the pod ran - C(status) (C(starting), C(healthy) or
              C(unhealthy)), C(failing_streak) (failed probes in a row), C(last) (the last probe's C(exit_code),
              C(output) - its first 4096 bytes of stdout and stderr - and C(started)/C(ended) times, or null
              before one finished), C(restarts) (pod restarts it caused, with C(on_failure=restart)) and C(check)
              (the check that runs - C(test), C(interval), C(timeout), C(start_period), C(retries), C(on_failure),
              and C(source) - C(image), C(option) or C(image+option)).
            - A probe that overran its C(timeout) has exit code 137 and says so in its output.
          type: dict
        log:
          description:
            - The last lines of the app's output (20 lines), each after its UTC time, from the pod's
              log files or, for a pod of C(log_driver=journald), from the journal (C(journalctl)); see C(docs/logs.md).
          type: str
        stop:
          description:
            - How the app is stopped - C(signal) (its name), C(timeout) (seconds of its own, null for the
              pod's stop timeout) - and what the last stop did - C(sent) (when the signal was sent, null
              before a stop) and C(killed) (true when its timeout ran out and it got SIGKILL).
          type: dict
    ignored_isolators:
      description: Isolators the stage1 did not enforce, by app name; empty when it enforced them all.
      returned: always
      type: dict
    images:
      description: The image ID each app's image reference resolved to when the pod was prepared, by app name.
      returned: always
      type: dict
    overlay:
      description: Whether the image trees are mounted with overlayfs (false - they were copied).
      returned: always
      type: bool
    networks:
      description:
        - Each network the pod joined, in order - C(name), C(ifname) (in the pod), C(ip), C(prefix),
          C(gateway), C(mac) and C(host_ifname) (the host end of its veth pair); on a dual-stack
          network also C(ip6), C(prefix6) and C(gateway6).
        - The first network also has C(ports) (the forwards, one per port of a range, with the
          C(host_port) chosen for V(0)) and C(aliases) (M(appc.rocket.pod_run)'s C(hostname_aliases)).
        - An empty list for a pod run with C(net=none); null for C(net=host).
        - A CNI network's entry also has C(cni=true), C(ips) (every address of the CNI result), C(guarded)
          (whether the host end carries the link guard) and, from pod_info for a running pod,
          C(check) - C(ok) or why CNI's CHECK failed.
      returned: always
      type: list
      elements: dict
action:
  description: What was done (or would be, in check mode).
  returned: always
  type: str
  choices: [none, run, replace, start, restart, stop, remove]
reasons:
  description: Why the action was needed - the fields that changed, a missing pod, a pod that exited.
  returned: always
  type: list
  elements: str
  sample: ["changed: environment.GREETING"]
overlay_fallback:
  description: Why the image trees were copied instead of mounted with overlayfs.
  returned: when a pod was prepared without overlayfs with O(overlay=auto)
  type: str
pulled:
  description:
    - The registry images (C(docker://...)) of the pod, one entry each, as M(appc.rocket.cas_image)
      returns its C(registry) result, plus C(image) (the image ID, none in check
      mode before a pull) and C(changed) (whether the reference now gives another image).
  returned: when the pod names a registry image
  type: list
  elements: dict
stage1_update_available:
  description: The ID of a newer default stage1 that O(update_stage1) would move the pod to.
  returned: when the pod runs an older default stage1 and O(update_stage1) is false
  type: str
"""

from ansible_collections.appc.rocket.plugins.module_utils import bytecode  # first: it serves the imports after it
from ansible_collections.appc.rocket.plugins.module_utils import pod_options


def spec():
    """AnsibleModule's arguments; the action checks a task's arguments against them too
    (plugin_utils/module_action.py, the direct path)."""
    return dict(
        argument_spec=pod_options.run_argument_spec(),
        mutually_exclusive=pod_options.MUTUALLY_EXCLUSIVE,
        required_one_of=[("name", "uuid", "image", "apps")],
        supports_check_mode=True,
    )


def task(module):
    """The task, given AnsibleModule or the direct path's stand-in (plugin_utils/thin_module.py)."""
    bytecode.save(not module.check_mode)
    from ansible_collections.appc.rocket.plugins.module_utils.pod_runner import converge_task

    converge_task(module, mode="run")


def main():
    from ansible.module_utils.basic import AnsibleModule  # here: the direct path imports this file without it

    task(AnsibleModule(**spec()))


if __name__ == "__main__":
    main()

# -*- coding: utf-8 -*-
# Copyright: appc.rocket developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  name:
    description:
      - The pod's name (an AC Name, at most 128 bytes). Tasks converge the pod of that name; two playbooks
        converging one name at once end with one pod.
      - Without O(image) or O(apps), the task acts on the pod as it was declared - its state, and with
        M(appc.rocket.pod_run) whether it is paused - and the run options it recorded hold, whatever the
        defaults of the options the task leaves out.
    type: str
  uuid:
    description: Refer to an existing pod by UUID or unambiguous UUID prefix instead of by name.
    type: str
  image:
    description:
      - Shorthand for a one-app pod - the image (ID, ID prefix, or C(name[:version][,label=value])).
      - The other app options (O(exec), O(user), ...) apply to this app.
    type: str
  exec:
    description: Replace the image's command.
    type: list
    elements: str
  exec_append:
    description: Arguments appended to the command (rkt's exec appends).
    type: list
    elements: str
  user:
    description:
      - User to run the app as - a name from the image's /etc/passwd, a number, or an absolute
        path (its owner). A colon is refused (C(root:0)); give the group in O(group).
    type: str
  group:
    description: Group to run the app as - a name from the image's /etc/group, a number, or an absolute path.
    type: str
  supplementary_gids:
    description: Supplementary group IDs.
    type: list
    elements: int
  working_dir:
    description: Working directory of the app (absolute).
    type: str
  read_only_rootfs:
    description: Mount the app's root file system read-only.
    type: bool
    default: false
  mounts:
    description: Volumes mounted into the app.
    type: list
    elements: dict
    suboptions:
      volume:
        description: Name of a volume of the pod.
        type: str
        required: true
      path:
        description: Absolute path in the app, without C(..) components.
        type: str
        required: true
      read_only:
        description:
          - This mount read-only (the volume's O(volumes[].read_only) makes every mount of it so).
        type: bool
      propagation:
        description:
          - Mount propagation of a V(host) volume's mount (C(--mount ...,bind-propagation=) of docker and
            podman). V(private) and V(rprivate) (the default) - nothing propagates either way.
          - V(slave) or V(rslave) - mounts made on the host under the source appear in the pod (when the
            host's mount of the source is shared); nothing the pod mounts reaches the host. Both are
            recursive here (every sub-mount a slave too, so none could send a mount out).
          - V(shared) or V(rshared) - the pod's mounts there appear on the host too; refused unless
            O(privileged=true) (a pod must not gain a way to mount onto the host).
          - Refused for other kinds of volume (nothing on the host propagates into them).
        type: str
        choices: [private, rprivate, slave, rslave, shared, rshared]
  isolators:
    description: appc isolators (C({name, value})) added to or replacing the image's.
    type: list
    elements: dict
  cap_add:
    description:
      - Capabilities added to the app's set, by their docker and podman names (V(NET_ADMIN) or
        V(CAP_NET_ADMIN), case-insensitive; V(ALL) for every capability). The default set is
        podman's - C(CHOWN DAC_OVERRIDE FOWNER FSETID KILL NET_BIND_SERVICE SETFCAP SETGID
        SETPCAP SETUID SYS_CHROOT) - without C(NET_RAW), C(MKNOD) and C(AUDIT_WRITE) that appc's
        default set holds.
      - Becomes appc's C(os/linux/capabilities-retain-set) isolator (the image's or default set
        minus O(cap_drop) plus these), replacing the image's capability isolators; it cannot be
        combined with a capability isolator in O(isolators). A non-root app user gets every
        capability of a retain-set (appc's rule), not only the added ones.
      - What it gives away - V(NET_RAW) - raw and packet sockets; with C(net=host) the app reads
        every frame on the host's interfaces, other pods' traffic and loopback included.
        V(MKNOD) - device nodes (the device allow-list still applies). V(SYS_ADMIN),
        V(SYS_MODULE), V(SYS_RAWIO), V(SYS_PTRACE), V(BPF), V(NET_ADMIN) - most of the host's root.
        See docs/isolation.md.
      - A change replaces the pod.
    type: list
    elements: str
  cap_drop:
    description:
      - Capabilities removed from the app's set (names as in O(cap_add); V(ALL) removes every one).
        Alone, appc's C(os/linux/capabilities-remove-set) isolator; a change replaces the pod.
    type: list
    elements: str
  healthcheck:
    description:
      - The app's healthcheck, as docker and podman run it. The keeper runs C(test) inside the app
        every C(interval), through stage1's enter - the app's namespaces, cgroups, root, user,
        capabilities, seccomp filter and environment, never more - and kills the probe's process
        group after C(timeout).
      - C(test) - a string (run by C(/bin/sh -c)), an argv list, or docker's forms C(["CMD", argv...]),
        C(["CMD-SHELL", "command"]), C(["NONE"]) (as C(disable)).
        Exit status 0 is a pass, anything else a failure.
      - C(interval), C(timeout) (default 30s each, at least 100ms), C(start_period) (default 0) -
        seconds, or durations such as C(30s), C(1m30s), C(500ms).
        C(retries) (default 3) - failures in a row that make the app C(unhealthy).
      - C(disable) - V(true) drops the check the image brings (and takes no other field).
      - C(on_failure) - V(none) (default) or V(restart) - an unhealthy app stops the pod and the
        keeper starts it again (with its backoff), whatever C(restart_policy) says; the pod's apps
        restart together, as one unit.
      - An OCI image's C(Healthcheck) is imported into the image (annotation C(appc.rocket/healthcheck));
        the fields given here override its fields, the rest are taken from it.
      - Status - C(starting) until a probe passes (failures within C(start_period) do not count),
        C(healthy), or C(unhealthy) after C(retries) failures in a row - in C(pod.apps[].health)
        with the failing streak and the last probe's exit code, output (first 4096 bytes) and times.
      - A change replaces the pod.
    type: dict
  stop_signal:
    description:
      - The signal the app gets when the pod is stopped - a name (V(SIGQUIT), V(QUIT), V(SIGRTMIN+3))
        or a number (V(3)), as docker's and podman's C(stop_signal).
      - Default - the image's OCI C(StopSignal) (kept by the OCI import as the image annotation
        C(appc.rocket/oci/stop-signal)), else V(SIGTERM). SIGKILL follows when the app has not exited
        after its stop timeout (C(apps[].stop_timeout), else pod_run's C(stop_timeout)).
      - Kept as the pod manifest app annotation C(rocket/stop-signal) (appc has no field for it).
        A change replaces the pod.
    type: str
  devices:
    description:
      - Host devices passed through to the app, as docker's C(--device) - V(/dev/loop3),
        V(/dev/loop3:/dev/disk0), V(/dev/loop3:/dev/disk0:rw), V(/dev/loop3:r), or
        C({path, container_path, permissions}). C(permissions) is a subset of V(rwm)
        (read, write, mknod; default V(rwm)).
      - The node is bound into the app's C(/dev) and its C(type major:minor) rule added to the
        same allow-list as the standard nodes (the cgroup v1 devices controller and the cgroup v2
        BPF device program); any other device stays unreachable. Both paths are under C(/dev);
        the host path must be a character or block device reached without a symlink (give
        the real path, not C(/dev/disk/by-id/...)), checked at prepare and at every start.
        C(m) lets the cgroup allow mknod, but C(/dev) is C(nodev), so a node the app makes never opens.
      - Reported in the app's C(isolation.devices) with the rule that allows it. A change replaces the pod.
    type: list
    elements: raw
  secrets:
    description:
      - Files holding secrets, mounted read-only in the app from a root-only tmpfs that exists
        only in the pod's mount namespace, never in the environment, C(spec.json) (only their
        SHA-256), results, diffs, logs or the pod directory. docker's and podman's C(--secret).
      - The data reaches stage1 in a sealed memfd that the pod's keeper holds for its restarts;
        once the keeper is gone (a reboot), the pod starts again only from a task that gives
        the secrets. A changed content replaces the pod (the diff shows it redacted).
    type: list
    elements: dict
    suboptions:
      name:
        description: Letters, digits, C(.), C(_) and C(-); unique in the app.
        type: str
        required: true
      content:
        description: The secret (one of O(secrets[].content) and O(secrets[].source)); at most 1 MiB.
        type: str
      source:
        description: A file on the managed host read when the task runs (not a symlink).
        type: path
      target:
        description: Where the app sees it; a relative path is under C(/run/secrets) (default C(/run/secrets/<name>)).
        type: str
      mode:
        description: The file's mode (octal string or number; default C(0400)).
        type: raw
      uid:
        description: The file's owner in the app (default 0); give the app's user for a non-root app.
        type: int
      gid:
        description: The file's group in the app (default 0).
        type: int
  memory:
    description:
      - The app's memory limit (docker's C(--memory)) as C(512m), C(1g), C(64MiB) (binary units) or
        bytes; at least C(6m). Becomes appc's C(resource/memory) limit. Without O(memory_swap) the
        app gets no swap. A change replaces the pod (as every limit below).
    type: raw
  memory_reservation:
    description:
      - The memory the app is reclaimed down to first under pressure (appc's C(resource/memory)
        request; C(memory.soft_limit_in_bytes) on cgroup v1, C(memory.low) on v2); at most O(memory).
    type: raw
  memory_swap:
    description:
      - Memory plus swap, as docker's C(--memory-swap) (needs O(memory), at least it); V(-1) for
        unlimited swap. C(rocket/memory-swap) isolator; reported not enforced without swap accounting.
    type: raw
  cpus:
    description:
      - CPUs the app may use, as a fraction (V(0.5), V(2)), as appc's C(resource/cpu) limit (a CFS quota).
    type: raw
  cpuset_cpus:
    description:
      - The CPUs the app may run on (V(0-2,4)), each online on the host. C(rocket/cpuset) isolator.
    type: raw
  cpuset_mems:
    description:
      - The memory nodes the app may allocate from (V(0)). C(rocket/cpuset) isolator.
    type: raw
  pids_limit:
    description:
      - At most this many processes and threads in the app (the pids cgroup, v1 and v2); a fork bomb
        stops there. Unset - 2048 (podman's default), so that one app cannot take every PID of the
        host; V(-1) or V(0) for unlimited. C(rocket/pids) isolator.
    type: int
  blkio_weight:
    description:
      - Block I/O weight, 10 to 1000 (C(blkio.bfq.weight) or C(io.weight); only where a proportional
        I/O scheduler such as BFQ exists, reported not enforced elsewhere). C(rocket/block-io) isolator.
    type: int
  device_read_bps:
    description:
      - Read bandwidth limits, a list of C({path, rate}) (or C(path:rate)) with C(path) a
        block device of the host and the rate in bytes per second (V(1m)). C(rocket/block-io) isolator.
    type: list
    elements: raw
  device_write_bps:
    description: Write bandwidth limits, as O(device_read_bps).
    type: list
    elements: raw
  device_read_iops:
    description: Read operations per second, a list of C({path, rate}) with a number as the rate.
    type: list
    elements: raw
  device_write_iops:
    description: Write operations per second, as O(device_read_iops).
    type: list
    elements: raw
  ulimits:
    description:
      - Resource limits (C(RLIMIT_*)) set in the app's process before it starts, a list of
        C({name, soft, hard}) or C(nofile=1024:2048) strings; V(-1) or C(unlimited) for no limit,
        hard defaults to soft. Names - C(nofile), C(nproc), C(core), C(memlock), C(stack) and the
        other C(RLIMIT_) names, lower case. C(rocket/ulimits) isolator.
    type: list
    elements: raw
  shm_size:
    description:
      - Size of the app's C(/dev/shm) (V(64m) without). Each app of a pod has its own C(/dev/shm),
        so it is per app. C(rocket/shm-size) isolator.
    type: raw
  oom_score_adj:
    description:
      - The app's C(/proc/PID/oom_score_adj), from V(-1000) (never chosen by the kernel's OOM killer)
        to V(1000) (chosen first), as docker's and podman's C(--oom-score-adj). Unset - the runtime's
        own (0 unless the process running the module has another); its processes inherit it.
        appc's C(os/linux/oom-score-adj) isolator (an image's is overridden).
    type: int
  unsetenv:
    description:
      - Variables of the image's environment that the app does without, as podman's C(--unsetenv).
        Only the image's are taken away; what the task sets (O(environment), O(secret_environment),
        O(env_file)) is set anyway, and O(inherit_env) may give a name back from the module's
        environment. C(PATH), C(AC_APP_NAME), C(AC_METADATA_URL) and C(container) are always set, as
        the appc spec requires (C(PATH) to the spec's default when the image's is taken away).
        A change replaces the pod.
    type: list
    elements: str
  unsetenv_all:
    description:
      - Take away the image's whole environment, as podman's C(--unsetenv-all) (see O(unsetenv)).
    type: bool
    default: false
  apps:
    description: The pod's apps, for pods of more than one app.
    type: list
    elements: dict
    suboptions:
      image:
        description: The app's image (ID, ID prefix, or C(name[:version][,label=value])).
        type: str
        required: true
      name:
        description: The app's name in the pod, at most 128 bytes (default - the last path element of the image name).
        type: str
      exec:
        description: Replace the image's command.
        type: list
        elements: str
      exec_append:
        description: Arguments appended to the command.
        type: list
        elements: str
      user:
        description: User to run the app as.
        type: str
      group:
        description: Group to run the app as.
        type: str
      supplementary_gids:
        description: Supplementary group IDs.
        type: list
        elements: int
      working_dir:
        description: Working directory of the app.
        type: str
      read_only_rootfs:
        description: Mount the app's root file system read-only.
        type: bool
        default: false
      mounts:
        description: Volumes mounted into this app.
        type: list
        elements: dict
        suboptions:
          volume:
            description: Name of a volume of the pod.
            type: str
            required: true
          path:
            description: Absolute path in the app.
            type: str
            required: true
          read_only:
            description: This mount read-only (as O(mounts[].read_only)).
            type: bool
          propagation:
            description: Mount propagation (as O(mounts[].propagation)).
            type: str
            choices: [private, rprivate, slave, rslave, shared, rshared]
      isolators:
        description: appc isolators for this app.
        type: list
        elements: dict
      cap_add:
        description: Capabilities added to this app's set (as O(cap_add)).
        type: list
        elements: str
      cap_drop:
        description: Capabilities removed from this app's set (as O(cap_drop)).
        type: list
        elements: str
      healthcheck:
        description: This app's healthcheck (as O(healthcheck)).
        type: dict
      stop_signal:
        description: The signal this app gets when the pod is stopped (as O(stop_signal)).
        type: str
      stop_timeout:
        description:
          - Seconds between this app's stop signal and SIGKILL when the pod is stopped. It wins over
            the pod's C(stop_timeout) of M(appc.rocket.pod_run), which applies to apps without one; the
            pod's stop lasts as long as its longest app's timeout.
          - Kept as the pod manifest app annotation C(rocket/stop-timeout). A change replaces the pod.
        type: float
      devices:
        description: Host devices passed through to this app (as O(devices)).
        type: list
        elements: raw
      secrets:
        description: Secret files of this app (as O(secrets)).
        type: list
        elements: dict
        suboptions:
          name:
            description: As O(secrets[].name).
            type: str
            required: true
          content:
            description: As O(secrets[].content).
            type: str
          source:
            description: As O(secrets[].source).
            type: path
          target:
            description: As O(secrets[].target).
            type: str
          mode:
            description: As O(secrets[].mode).
            type: raw
          uid:
            description: As O(secrets[].uid).
            type: int
          gid:
            description: As O(secrets[].gid).
            type: int
      env_file:
        description: Dotenv files for this app only (as O(env_file); this app's O(apps[].environment) wins over them).
        type: list
        elements: path
      env_file_secret:
        description: This app's O(apps[].env_file) values are secrets (as O(env_file_secret)).
        type: bool
        default: false
      memory:
        description:
          - The app's memory limit (docker's C(--memory)) as C(512m), C(1g), C(64MiB) (binary units) or
            bytes; at least C(6m). Becomes appc's C(resource/memory) limit. Without O(memory_swap) the
            app gets no swap. A change replaces the pod (as every limit below).
        type: raw
      memory_reservation:
        description:
          - The memory the app is reclaimed down to first under pressure (appc's C(resource/memory)
            request; C(memory.soft_limit_in_bytes) on cgroup v1, C(memory.low) on v2); at most O(memory).
        type: raw
      memory_swap:
        description:
          - Memory plus swap, as docker's C(--memory-swap) (needs O(memory), at least it); V(-1) for
            unlimited swap. C(rocket/memory-swap) isolator; reported not enforced without swap accounting.
        type: raw
      cpus:
        description:
          - CPUs the app may use, as a fraction (V(0.5), V(2)), as appc's C(resource/cpu) limit (a CFS quota).
        type: raw
      cpuset_cpus:
        description:
          - The CPUs the app may run on (V(0-2,4)), each online on the host. C(rocket/cpuset) isolator.
        type: raw
      cpuset_mems:
        description:
          - The memory nodes the app may allocate from (V(0)). C(rocket/cpuset) isolator.
        type: raw
      pids_limit:
        description:
          - At most this many processes and threads in the app (the pids cgroup, v1 and v2); a fork bomb
            stops there. Unset - 2048 (podman's default), so that one app cannot take every PID of the
            host; V(-1) or V(0) for unlimited. C(rocket/pids) isolator.
        type: int
      blkio_weight:
        description:
          - Block I/O weight, 10 to 1000 (C(blkio.bfq.weight) or C(io.weight); only where a proportional
            I/O scheduler such as BFQ exists, reported not enforced elsewhere). C(rocket/block-io) isolator.
        type: int
      device_read_bps:
        description:
          - Read bandwidth limits, a list of C({path, rate}) (or C(path:rate)) with C(path) a
            block device of the host and the rate in bytes per second (V(1m)). C(rocket/block-io) isolator.
        type: list
        elements: raw
      device_write_bps:
        description: Write bandwidth limits, as O(device_read_bps).
        type: list
        elements: raw
      device_read_iops:
        description: Read operations per second, a list of C({path, rate}) with a number as the rate.
        type: list
        elements: raw
      device_write_iops:
        description: Write operations per second, as O(device_read_iops).
        type: list
        elements: raw
      ulimits:
        description:
          - Resource limits (C(RLIMIT_*)) set in the app's process before it starts, a list of
            C({name, soft, hard}) or C(nofile=1024:2048) strings; V(-1) or C(unlimited) for no limit,
            hard defaults to soft. Names - C(nofile), C(nproc), C(core), C(memlock), C(stack) and the
            other C(RLIMIT_) names, lower case. C(rocket/ulimits) isolator.
        type: list
        elements: raw
      shm_size:
        description:
          - Size of the app's C(/dev/shm) (V(64m) without). Each app of a pod has its own C(/dev/shm),
            so it is per app. C(rocket/shm-size) isolator.
        type: raw
      oom_score_adj:
        description:
          - The app's C(/proc/PID/oom_score_adj), from V(-1000) (never chosen by the kernel's OOM killer)
            to V(1000) (chosen first), as docker's and podman's C(--oom-score-adj). Unset - the runtime's
            own (0 unless the process running the module has another); its processes inherit it.
            appc's C(os/linux/oom-score-adj) isolator (an image's is overridden).
        type: int
      unsetenv:
        description: Variables of the image's environment this app does without (as O(unsetenv)).
        type: list
        elements: str
      unsetenv_all:
        description: Take away the image's whole environment for this app (as O(unsetenv_all)).
        type: bool
        default: false
      environment:
        description: Variables for this app only (they override O(environment)).
        type: dict
      annotations:
        description: Annotations of this app.
        type: dict
  volumes:
    description: The pod's volumes.
    type: list
    elements: dict
    suboptions:
      name:
        description: Volume name (an AC Name, at most 128 bytes).
        type: str
        required: true
      kind:
        description:
          - V(host) binds a host directory, V(empty) gives a fresh directory.
          - V(named) mounts the named volume O(volumes[].volume_name) (default O(volumes[].name)), kept
            under C(<data_dir>/volumes/<name>/data) and outliving the pod (M(appc.rocket.pod_volume)). It is
            created on first use with O(volumes[].mode), O(volumes[].uid) and O(volumes[].gid); an
            existing one keeps its own (podman's rule). With C(private_users) it is mounted idmapped,
            so files keep the ids the pod sees and pods with other ranges (or none) share them.
          - V(tmpfs) mounts a memory file system (C(nosuid), C(nodev)) of O(volumes[].size), mode and owner,
            one per pod, shared by its apps and gone with the pod.
          - Without O(volumes[].kind) a volume is V(empty); a volume with O(volumes[].source) must say
            V(host), or the module fails (the user's data would otherwise go to an empty volume).
        type: str
        choices: [host, empty, named, tmpfs]
      source:
        description:
          - Host path for V(host) volumes, absolute, without C(..). It must exist, and no
            component of it may be a symlink, whoever owns it (give the resolved path); this is
            checked at prepare and again at every start and restart.
        type: path
      read_only:
        description: Mount read-only.
        type: bool
        default: false
      recursive:
        description: Bind sub-mounts too (V(host) volumes).
        type: bool
        default: true
      mode:
        description:
          - Octal mode of an V(empty) or V(tmpfs) volume, or of a V(named) one it creates.
          - Default C(0755), for V(tmpfs) C(1777).
        type: str
      uid:
        description: Owner of an V(empty) or V(tmpfs) volume, or of a V(named) one it creates (as the pod sees it).
        type: int
        default: 0
      gid:
        description: Group of an V(empty) or V(tmpfs) volume, or of a V(named) one it creates.
        type: int
        default: 0
      volume_name:
        description: The named volume a V(named) volume mounts (an AC Name); default O(volumes[].name).
        type: str
      size:
        description:
          - Size limit of a V(tmpfs) volume, in bytes or with C(k), C(m), C(g) (powers of 1024), e.g. V(64m).
            Writes beyond it fail with C(ENOSPC). Default the kernel's (half the host's memory).
        type: raw
  environment:
    description: Variables for every app; they override the image's.
    type: dict
    default: {}
  secret_environment:
    description:
      - Like O(environment), for values that must never appear in results, diffs or logs.
        Only their digest is kept in the pod's spec; the pod files holding them are mode 0600.
    type: dict
    default: {}
  env_file:
    description:
      - Dotenv files read on the managed host (where the module runs) when the task runs, for
        every app - C(NAME=VALUE) lines, C(#) comments, an C(export) prefix, single quotes (literal)
        and double quotes (C(\\n), C(\\t), C(\\") escapes; both may span lines); nothing is
        expanded. A later file wins over an earlier one; O(environment) and
        O(secret_environment) win over them. Errors name the option, the file and the line.
      - Their values are compared as given (a changed file replaces the pod).
    type: list
    elements: path
  env_file_secret:
    description: Treat the values of O(env_file) as O(secret_environment) does (digests only in the
      pod's spec, redacted in results and diffs).
    type: bool
    default: false
  inherit_env:
    description: Give the apps the module's environment for variables they do not set.
    type: bool
    default: false
  annotations:
    description: Pod annotations.
    type: dict
    default: {}
  stage1_image:
    description: A stage1 image from the store instead of the default one.
    type: str
  overlay:
    description:
      - V(auto) uses overlayfs where it works and copies the image trees where it does not;
        V(yes) requires overlayfs; V(no) always copies.
    type: str
    choices: [auto, 'yes', 'no']
    default: auto
  update_stage1:
    description:
      - Replace the pod when a newer default stage1 is available. By default a newer stage1
        is only reported (RV(stage1_update_available)) - upgrading the collection never
        restarts a fleet.
    type: bool
    default: false
  privileged:
    description:
      - Run the pod's apps as docker's and podman's C(--privileged) does - every capability in
        the bounding set (root's effective set), no seccomp filter, no cgroup device allow-list,
        a C(/dev) the apps may make working device nodes in, and C(/proc) and C(/sys) without
        masked or read-only paths.
      - B(It gives away all isolation from the host:) a privileged app running as root is root
        on the host (it also stays in the host's user namespace). Use it only for trusted images
        that must manage the host (see docs/isolation.md).
      - Cannot be combined with O(cap_drop) or C(os/linux/capabilities-*) and C(os/linux/seccomp-*)
        isolators (it is an error, not a silent precedence); an image's own capability and seccomp
        isolators are overridden. A change replaces the pod.
    type: bool
    default: false
  sysctls:
    description:
      - Kernel parameters of the pod's own namespaces, as docker's and podman's C(sysctls), a
        dictionary of names (C(net.ipv4.tcp_keepalive_time) or C(net/ipv4/tcp_keepalive_time)) and
        values; the apps share them, as they share the pod's network and IPC namespaces. Written by stage1 before any app starts, as
        appc's pod-level C(os/unix/sysctl) isolator.
      - Only C(net.*) (not with M(appc.rocket.pod_run)'s C(net=host)) and the IPC namespace's C(kernel.shm*), C(kernel.msg*),
        C(kernel.sem) and C(fs.mqueue.*); anything else would change the whole host and is refused
        before anything changes, as is a value an app's own C(os/unix/sysctl) isolator sets otherwise.
      - A change replaces the pod.
    type: dict
  pull:
    description:
      - When to pull a registry image (an image given as C(docker://...), see the collection's
        docs/registries.md) - V(never) uses only the store, V(new) (alias V(missing)) pulls when the
        reference was never pulled, V(update) (alias V(always)) asks the registry for the reference's
        digest and pulls only when it moved (then the pod is replaced, its image having changed).
      - Images named otherwise are taken from the store; M(appc.rocket.cas_image) imports them.
    type: str
    choices: [never, new, update, missing, always]
    default: new
  registry:
    description: How registry images (C(docker://...)) are pulled; as the options of M(appc.rocket.cas_image).
    type: dict
    suboptions:
      platform:
        description: The platform (C(os/arch[/variant])) taken from a multi-platform image; default this host's.
        type: str
      registries_conf:
        description: A containers C(registries.conf) (mirrors, insecure registries) instead of C(/etc/containers/registries.conf).
        type: path
      auth_file:
        description: The auth file to read credentials from, instead of the default ones.
        type: path
      ca_path:
        description: CA bundle for the registries' TLS, instead of the system's (and C(certs.d)).
        type: path
      cert_dir:
        description: A C(certs.d)-style directory (C(<host:port>/ca.crt), client C(*.cert)/C(*.key)) instead of the system ones.
        type: path
      require_digest:
        description: Registries (or C(registry/repository) prefixes) whose references must be pinned by digest.
        type: list
        elements: str
        default: []
      timeout:
        description: Seconds to wait for a registry to connect or send data.
        type: int
        default: 30
      retries:
        description: Retries of a failed request or broken download.
        type: int
        default: 3
      max_size:
        description: Largest uncompressed image accepted, in bytes.
        type: int
        default: 8589934592
  ports:
    description:
      - Host ports forwarded to the pod on private networks (C(net) of M(appc.rocket.pod_run) other than
        V(host) and V(none); with V(host) apps bind the host's ports themselves). Traffic to the host
        port from other hosts, from the host itself and from C(127.0.0.1) reaches the app.
      - Either O(ports[].name) (a port an app declares in its image manifest's C(app.ports), as
        appc's pod manifest C(ports) does) or O(ports[].port) (a port number, with O(ports[].protocol)).
      - A change replaces the pod. Two pods cannot forward the same host port.
    type: list
    elements: dict
    suboptions:
      name:
        description: Name of a port an app of the pod declares.
        type: str
      port:
        description:
          - Port number in the pod (instead of O(ports[].name)), or a range V(8000-8009) (at most 1024 ports),
            forwarded port by port from the range of O(ports[].host_port).
        type: raw
      protocol:
        description: Protocol of O(ports[].port) (a named port has its own).
        type: str
        choices: [tcp, udp]
      host_port:
        description:
          - Port on the host; a range V(9000-9009) of the length of O(ports[].port)'s range, or its
            first port.
          - V(0) picks a free port at each start (a single port, not a range); RV(pod.networks)
            returns the chosen one in its first network's C(ports).
        type: raw
        required: true
      host_ip:
        description:
          - Forward only this host address (IPv4 or IPv6; default - every address of the host).
          - On a dual-stack network (C(subnet6)) a forward without O(ports[].host_ip) exists for
            both families; an IPv6 forward is reached on the host's IPv6 addresses, not on C(::1).
        type: str
"""

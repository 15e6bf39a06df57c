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
          - Without O(volumes[].kind) a volume is V(empty); a volume with O(volumes[].source) must say
            V(host), or the module fails (the user's data would otherwise go to an empty volume).
        type: str
        choices: [host, empty]
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
        description: Mode of an V(empty) volume.
        type: str
        default: "0755"
      uid:
        description: Owner of an V(empty) volume.
        type: int
        default: 0
      gid:
        description: Group of an V(empty) volume.
        type: int
        default: 0
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
        description: Port number in the pod (instead of O(ports[].name)).
        type: int
      protocol:
        description: Protocol of O(ports[].port) (a named port has its own).
        type: str
        choices: [tcp, udp]
      host_port:
        description: Port on the host.
        type: int
        required: true
      host_ip:
        description: Forward only this host address (IPv4; default - every address of the host).
        type: str
"""

#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: appc.rocket developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
---
module: pod_set
short_description: Converge a list of App Container images and pods in one task
description:
  - Imports the declared images (each item takes the options of M(appc.rocket.cas_image)),
    then converges the declared pods (each item takes the options of M(appc.rocket.pod_run)),
    in that order, in one module run - a list of twenty pods that need nothing costs one
    module round trip, not twenty.
  - Each pod is compared and changed exactly as M(appc.rocket.pod_run) would; an image that
    the same task updates replaces the pods that use it (their image ID changed).
  - With O(managed_by), every declared pod carries the pod annotation
    C(appc.rocket/managed-by) with that value, and O(purge=true) removes the named pods that
    carry the same value but are no longer declared. Pods without it are never touched.
  - Every item's options are checked before anything changes, so a bad option in one item
    leaves every pod as it was. Otherwise it stops at the first item that fails; the failure
    names the item, and RV(images) and RV(pods) hold the results of the items before it.
version_added: "0.1.0"
author:
  - appc.rocket developers (@appc-rocket)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - appc.rocket.data_dir
options:
  managed_by:
    description:
      - A value for the C(appc.rocket/managed-by) pod annotation of every declared pod, naming who
        owns them (the M(appc.rocket.pods) role uses C(appc.rocket.pods)).
      - Adding or changing it replaces the pods (annotations are part of the pod's spec).
    type: str
  purge:
    description:
      - Remove named pods whose C(appc.rocket/managed-by) annotation equals O(managed_by) and
        that O(pods) does not declare. Requires O(managed_by).
    type: bool
    default: false
  purge_stop_timeout:
    description: Seconds between SIGTERM and SIGKILL when a purged pod is stopped.
    type: int
    default: 10
  images:
    description:
      - Images to converge first, in order; each item takes the options of M(appc.rocket.cas_image)
        except O(data_dir).
    type: list
    elements: dict
    default: []
    suboptions:
      allow_devices:
        description:
        - Create device nodes and FIFOs found in the archive. By default they are skipped and listed in C(skipped_members).
        type: bool
        default: false
      auth_file:
        description:
        - The auth file (containers C(auth.json) or Docker C(config.json) format) to read registry credentials
          from, instead of the default ones. O(images[].username) and O(images[].password) win over it.
        type: path
      ca_path:
        description:
        - CA bundle (file or directory) for https, instead of the system's.
        type: path
      cert_dir:
        description:
        - A C(certs.d)-style directory (C(<host:port>/ca.crt), client C(*.cert) and C(*.key)) searched instead
          of C(/etc/containers/certs.d) and C(/etc/docker/certs.d).
        type: path
      client_cert:
        description:
        - Client certificate (PEM) for https.
        type: path
      client_key:
        description:
        - Key of O(images[].client_cert).
        type: path
      credentials_file:
        description:
        - An rkt-style C(auth.d) JSON file naming domains and their credentials.
        type: path
      default_stage1:
        description:
        - V(true) refers to the collection's default stage1 image - built on the host from the stage1 programs
          every pod module carries (the same image ID on every host for one collection version) and imported,
          or removed with O(images[].state=absent).
        - Pod modules import it by themselves when a pod first needs it; this makes a host ready ahead of time
          (the M(appc.rocket.runtime) role uses it).
        type: bool
      digest:
        description:
        - For a registry reference - the manifest digest (C(sha256:...)) the registry must give, the reference's
          own or its platform's; anything else fails and nothing is kept.
        type: str
      discovery_overrides:
        description:
        - Maps a host name to a base URL - every request for that host (discovery pages, images, signatures)
          goes to the base URL instead (mirrors, tests).
        type: dict
      force:
        description:
        - With O(images[].state=absent), remove the image even when pods still use it.
        type: bool
        default: false
      format:
        description:
        - What O(images[].src) is. V(auto) looks at its first archive members or directory entries.
        type: str
        choices:
        - auto
        - aci
        - oci
        default: auto
      id:
        description:
        - Refer to an image by ID or by an unambiguous ID prefix (C(sha512-) and at least two hex digits).
        type: str
      insecure:
        description:
        - Checks to relax for remote images - V(image) (alias V(signature)) accepts an image without a valid
          signature by a trusted key, V(tls) skips certificate checks, V(http) allows plain http; V(all-fetch)
          is all three.
        type: list
        elements: str
        choices:
        - image
        - signature
        - tls
        - http
        - all-fetch
        default: []
      labels:
        description:
        - Labels that the image referred to by O(images[].name) must carry.
        type: dict
        default: {}
      manifest:
        description:
        - The image manifest for O(images[].rootfs), as a dictionary (appc ImageManifest).
        - C(acKind) and C(acVersion) default to C(ImageManifest) and C(0.8.11).
        type: dict
      max_size:
        description:
        - Largest uncompressed size, in bytes, an archive may have (a defence against decompression bombs).
        type: int
        default: 8589934592
      name:
        description:
        - Refer to an image by name, either plain (C(example.com/app)) or with a version and labels (C(example.com/app:1.0.0,os=linux)).
        - With O(images[].state=present) alone, the image is discovered (appc discovery) and fetched when the
          store does not have it (see O(images[].pull)); the host's os and arch are the default labels.
        - A fetched image must be signed by a key trusted for its name (M(appc.rocket.cas_trust)).
        type: str
      password:
        description:
        - Password for O(images[].username).
        type: str
      platform:
        description:
        - Which platform of a multi-platform OCI index (C(linux/arm64)); default this host's.
        type: str
      pull:
        description:
        - For a remote O(images[].src) or an O(images[].name) to discover - V(never) uses only the store, V(new)
          fetches when the image is not in the store yet, V(update) revalidates a stored remote image (C(If-None-Match),
          C(If-Modified-Since), C(Cache-Control) max-age) and fetches it only when it changed.
        - For a registry reference, V(update) asks the registry for the reference's digest only and downloads
          nothing when it has not moved. V(missing) and V(always) are podman's names for V(new) and V(update).
        type: str
        choices:
        - never
        - new
        - update
        - missing
        - always
        default: new
      ref:
        description:
        - Which image of an OCI layout or docker archive holding several (a reference such as C(alpine:3.19),
          or a manifest or config digest).
        type: str
      registries_conf:
        description:
        - A containers C(registries.conf) (mirrors, insecure and blocked registries, unqualified-search registries)
          instead of C(/etc/containers/registries.conf).
        type: path
      require_digest:
        description:
        - Registries (C(host[:port])) or C(registry/repository) prefixes from which a reference without a digest
          (in the reference or O(images[].digest)) is refused.
        type: list
        elements: str
        default: []
      retries:
        description:
        - Retries of a failed request or broken download, with backoff.
        type: int
        default: 3
      rootfs:
        description:
        - Build the image from this directory (its content becomes the image's C(rootfs/)).
        - Requires O(images[].manifest). Files are stored owned by root with a fixed mtime, so the same directory
          and manifest always give the same image ID.
        type: path
      src:
        description:
        - Path on the target host of an ACI file, an OCI image layout (a directory, or a tar of one, plain or
          compressed) or a C(docker save) archive. The kind is detected (see O(images[].format)).
        - OCI and docker images are converted to an appc image - layers applied in order with whiteouts, every
          layer digest verified, the config mapped onto an image manifest (see the collection's docs/oci.md
          for the mapping and what has no appc equivalent).
        - With O(images[].name) (and O(images[].labels)), an ACI's manifest must carry that name; an OCI image
          is given that name instead of the one its reference gives.
        - An https URL fetches a remote image (see O(images[].pull)); it must be signed by a key trusted for
          its name (M(appc.rocket.cas_trust)) unless O(images[].insecure) says otherwise.
        - A registry reference C(docker://[host[:port]/]repository[:tag][@sha256:...]) pulls an OCI or Docker
          image from a registry (the scheme is required; C(docker://nginx) is C(docker.io/library/nginx:latest))
          and converts it like an OCI layout. Its blobs are kept in the store and shared between images; see
          the collection's docs/registries.md. Registry images carry no appc signature - see O(images[].digest)
          and O(images[].require_digest).
        type: str
      state:
        description:
        - V(present) imports or builds the image when it is missing.
        - V(absent) removes the image, its manifest and its rendered trees.
        type: str
        choices:
        - present
        - absent
        default: present
      timeout:
        description:
        - Connect and read timeout of each request, in seconds.
        type: int
        default: 30
      username:
        description:
        - User for HTTP basic authentication, sent only to the host of O(images[].src) or O(images[].name).
        type: str
  pods:
    description:
      - Pods to converge, in order, after the images; each item takes the options of
        M(appc.rocket.pod_run) except O(data_dir) and C(uuid), and must have a name.
    type: list
    elements: dict
    default: []
    suboptions:
      annotations:
        description:
        - Pod annotations.
        type: dict
        default: {}
      apps:
        description:
        - The pod's apps, for pods of more than one app.
        type: list
        elements: dict
        suboptions:
          annotations:
            description:
            - Annotations of this app.
            type: dict
          blkio_weight:
            description:
            - Block I/O weight, 10 to 1000 (C(blkio.bfq.weight) or C(io.weight); only where a proportional I/O
              scheduler such as BFQ exists, reported not enforced elsewhere). C(rocket/block-io) isolator.
            type: int
          cap_add:
            description:
            - Capabilities added to this app's set (as O(pods[].cap_add)).
            type: list
            elements: str
          cap_drop:
            description:
            - Capabilities removed from this app's set (as O(pods[].cap_drop)).
            type: list
            elements: str
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
          device_read_bps:
            description:
            - Read bandwidth limits, a list of C({path, rate}) (or C(path:rate)) with C(path) a block device
              of the host and the rate in bytes per second (V(1m)). C(rocket/block-io) isolator.
            type: list
            elements: raw
          device_read_iops:
            description:
            - Read operations per second, a list of C({path, rate}) with a number as the rate.
            type: list
            elements: raw
          device_write_bps:
            description:
            - Write bandwidth limits, as O(pods[].device_read_bps).
            type: list
            elements: raw
          device_write_iops:
            description:
            - Write operations per second, as O(pods[].device_read_iops).
            type: list
            elements: raw
          devices:
            description:
            - Host devices passed through to this app (as O(pods[].devices)).
            type: list
            elements: raw
          env_file:
            description:
            - Dotenv files for this app only (as O(pods[].env_file); this app's O(pods[].apps[].environment)
              wins over them).
            type: list
            elements: path
          env_file_secret:
            description:
            - This app's O(pods[].apps[].env_file) values are secrets (as O(pods[].env_file_secret)).
            type: bool
            default: false
          environment:
            description:
            - Variables for this app only (they override O(pods[].environment)).
            type: dict
          exec:
            description:
            - Replace the image's command.
            type: list
            elements: str
          exec_append:
            description:
            - Arguments appended to the command.
            type: list
            elements: str
          group:
            description:
            - Group to run the app as.
            type: str
          healthcheck:
            description:
            - This app's healthcheck (as O(pods[].healthcheck)).
            type: dict
          image:
            description:
            - The app's image (ID, ID prefix, or C(name[:version][,label=value])).
            type: str
            required: true
          isolators:
            description:
            - appc isolators for this app.
            type: list
            elements: dict
          memory:
            description:
            - The app's memory limit (docker's C(--memory)) as C(512m), C(1g), C(64MiB) (binary units) or bytes;
              at least C(6m). Becomes appc's C(resource/memory) limit. Without O(pods[].memory_swap) the app
              gets no swap. A change replaces the pod (as every limit below).
            type: raw
          memory_reservation:
            description:
            - The memory the app is reclaimed down to first under pressure (appc's C(resource/memory) request;
              C(memory.soft_limit_in_bytes) on cgroup v1, C(memory.low) on v2); at most O(pods[].memory).
            type: raw
          memory_swap:
            description:
            - Memory plus swap, as docker's C(--memory-swap) (needs O(pods[].memory), at least it); V(-1) for
              unlimited swap. C(rocket/memory-swap) isolator; reported not enforced without swap accounting.
            type: raw
          mounts:
            description:
            - Volumes mounted into this app.
            type: list
            elements: dict
            suboptions:
              path:
                description:
                - Absolute path in the app.
                type: str
                required: true
              propagation:
                description:
                - Mount propagation (as O(pods[].mounts[].propagation)).
                type: str
                choices:
                - private
                - rprivate
                - slave
                - rslave
                - shared
                - rshared
              read_only:
                description:
                - This mount read-only (as O(pods[].mounts[].read_only)).
                type: bool
              volume:
                description:
                - Name of a volume of the pod.
                type: str
                required: true
          name:
            description:
            - The app's name in the pod, at most 128 bytes (default - the last path element of the image name).
            type: str
          oom_score_adj:
            description:
            - The app's C(/proc/PID/oom_score_adj), from V(-1000) (never chosen by the kernel's OOM killer)
              to V(1000) (chosen first), as docker's and podman's C(--oom-score-adj). Unset - the runtime's
              own (0 unless the process running the module has another); its processes inherit it. appc's C(os/linux/oom-score-adj)
              isolator (an image's is overridden).
            type: int
          pids_limit:
            description:
            - At most this many processes and threads in the app (the pids cgroup, v1 and v2); a fork bomb stops
              there. Unset - 2048 (podman's default), so that one app cannot take every PID of the host; V(-1)
              or V(0) for unlimited. C(rocket/pids) isolator.
            type: int
          read_only_rootfs:
            description:
            - Mount the app's root file system read-only.
            type: bool
            default: false
          secrets:
            description:
            - Secret files of this app (as O(pods[].secrets)).
            type: list
            elements: dict
            suboptions:
              content:
                description:
                - As O(pods[].secrets[].content).
                type: str
              gid:
                description:
                - As O(pods[].secrets[].gid).
                type: int
              mode:
                description:
                - As O(pods[].secrets[].mode).
                type: raw
              name:
                description:
                - As O(pods[].secrets[].name).
                type: str
                required: true
              source:
                description:
                - As O(pods[].secrets[].source).
                type: path
              target:
                description:
                - As O(pods[].secrets[].target).
                type: str
              uid:
                description:
                - As O(pods[].secrets[].uid).
                type: int
          shm_size:
            description:
            - Size of the app's C(/dev/shm) (V(64m) without). Each app of a pod has its own C(/dev/shm), so
              it is per app. C(rocket/shm-size) isolator.
            type: raw
          stop_signal:
            description:
            - The signal this app gets when the pod is stopped (as O(pods[].stop_signal)).
            type: str
          stop_timeout:
            description:
            - Seconds between this app's stop signal and SIGKILL when the pod is stopped. It wins over the pod's
              C(stop_timeout) of M(appc.rocket.pod_run), which applies to apps without one; the pod's stop lasts
              as long as its longest app's timeout.
            - Kept as the pod manifest app annotation C(rocket/stop-timeout). A change replaces the pod.
            type: float
          supplementary_gids:
            description:
            - Supplementary group IDs.
            type: list
            elements: int
          ulimits:
            description:
            - Resource limits (C(RLIMIT_*)) set in the app's process before it starts, a list of C({name, soft,
              hard}) or C(nofile=1024:2048) strings; V(-1) or C(unlimited) for no limit, hard defaults to soft.
              Names - C(nofile), C(nproc), C(core), C(memlock), C(stack) and the other C(RLIMIT_) names, lower
              case. C(rocket/ulimits) isolator.
            type: list
            elements: raw
          unsetenv:
            description:
            - Variables of the image's environment this app does without (as O(pods[].unsetenv)).
            type: list
            elements: str
          unsetenv_all:
            description:
            - Take away the image's whole environment for this app (as O(pods[].unsetenv_all)).
            type: bool
            default: false
          user:
            description:
            - User to run the app as.
            type: str
          working_dir:
            description:
            - Working directory of the app.
            type: str
      blkio_weight:
        description:
        - Block I/O weight, 10 to 1000 (C(blkio.bfq.weight) or C(io.weight); only where a proportional I/O scheduler
          such as BFQ exists, reported not enforced elsewhere). C(rocket/block-io) isolator.
        type: int
      boot:
        description:
        - Bring the pod back when its host boots, whatever O(pods[].restart_policy) says - with the same UUID,
          volumes, addresses and data, before or without any playbook run (C(appc-rocket-pods.service), which
          the M(appc.rocket.runtime) role installs on systemd hosts; see C(docs/reboots.md)).
        - Only a pod that was running when the host went down comes back (a power cut, or a shutdown that stopped
          it); a pod that exited on its own or was stopped by the user stays exited. A O(pods[].restart_policy)
          other than V(no) brings pods back at boot too, by its own rules.
        - A change replaces the pod.
        type: bool
        default: false
      cap_add:
        description:
        - Capabilities added to the app's set, by their docker and podman names (V(NET_ADMIN) or V(CAP_NET_ADMIN),
          case-insensitive; V(ALL) for every capability). The default set is podman's - C(CHOWN DAC_OVERRIDE
          FOWNER FSETID KILL NET_BIND_SERVICE SETFCAP SETGID SETPCAP SETUID SYS_CHROOT) - without C(NET_RAW),
          C(MKNOD) and C(AUDIT_WRITE) that appc's default set holds.
        - Becomes appc's C(os/linux/capabilities-retain-set) isolator (the image's or default set minus O(pods[].cap_drop)
          plus these), replacing the image's capability isolators; it cannot be combined with a capability isolator
          in O(pods[].isolators). A non-root app user gets every capability of a retain-set (appc's rule), not
          only the added ones.
        - What it gives away - V(NET_RAW) - raw and packet sockets; with C(net=host) the app reads every frame
          on the host's interfaces, other pods' traffic and loopback included. V(MKNOD) - device nodes (the
          device allow-list still applies). V(SYS_ADMIN), V(SYS_MODULE), V(SYS_RAWIO), V(SYS_PTRACE), V(BPF),
          V(NET_ADMIN) - most of the host's root. See docs/isolation.md.
        - A change replaces the pod.
        type: list
        elements: str
      cap_drop:
        description:
        - Capabilities removed from the app's set (names as in O(pods[].cap_add); V(ALL) removes every one).
          Alone, appc's C(os/linux/capabilities-remove-set) isolator; a change replaces the pod.
        type: list
        elements: str
      cgroup_parent:
        description:
        - The cgroup the pod's cgroups go under, as docker's and podman's C(cgroup_parent) - a path below each
          hierarchy's root (C(/sys/fs/cgroup) and each v1 controller's), such as C(pods) or C(machine.slice/pods).
          Unset - C(rocket), so a pod's cgroup is C(rocket/<uuid>).
        - Missing levels are made (on cgroup v2 each gets the controllers the pod uses); they stay when the
          pod is removed, as a parent the user names is theirs. Limits set on them hold for every pod below.
        - Relative, of letters, digits and C(_ - . @ :), without C(.) or C(..), interface file names (C(cgroup.*))
          or UUIDs (a pod's own cgroup), all refused before anything changes.
        - Under a systemd slice, systemd does not manage the pods (nothing is delegated through D-Bus).
        - A change replaces the pod.
        type: str
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
      debug:
        description:
        - Ask stage1 to log what it does (to the pod's stage1 log).
        type: bool
        default: false
      device_read_bps:
        description:
        - Read bandwidth limits, a list of C({path, rate}) (or C(path:rate)) with C(path) a block device of
          the host and the rate in bytes per second (V(1m)). C(rocket/block-io) isolator.
        type: list
        elements: raw
      device_read_iops:
        description:
        - Read operations per second, a list of C({path, rate}) with a number as the rate.
        type: list
        elements: raw
      device_write_bps:
        description:
        - Write bandwidth limits, as O(pods[].device_read_bps).
        type: list
        elements: raw
      device_write_iops:
        description:
        - Write operations per second, as O(pods[].device_read_iops).
        type: list
        elements: raw
      devices:
        description:
        - Host devices passed through to the app, as docker's C(--device) - V(/dev/loop3), V(/dev/loop3:/dev/disk0),
          V(/dev/loop3:/dev/disk0:rw), V(/dev/loop3:r), or C({path, container_path, permissions}). C(permissions)
          is a subset of V(rwm) (read, write, mknod; default V(rwm)).
        - The node is bound into the app's C(/dev) and its C(type major:minor) rule added to the same allow-list
          as the standard nodes (the cgroup v1 devices controller and the cgroup v2 BPF device program); any
          other device stays unreachable. Both paths are under C(/dev); the host path must be a character or
          block device reached without a symlink (give the real path, not C(/dev/disk/by-id/...)), checked at
          prepare and at every start. C(m) lets the cgroup allow mknod, but C(/dev) is C(nodev), so a node the
          app makes never opens.
        - Reported in the app's C(isolation.devices) with the rule that allows it. A change replaces the pod.
        type: list
        elements: raw
      dns:
        description:
        - Nameservers of the pod's C(/etc/resolv.conf) on private networks. By default the host's, without loopback
          ones (a local stub resolver cannot be reached from a pod); when none is left, those of C(/run/systemd/resolve/resolv.conf),
          else 8.8.8.8 and 8.8.4.4.
        type: list
        elements: str
      dns_options:
        description:
        - Resolver options (C(options) line, e.g. V(ndots:2)) on private networks (default - the host's).
        type: list
        elements: str
      dns_search:
        description:
        - Search domains of the pod's C(/etc/resolv.conf) on private networks (at most 6; default - the host's).
        type: list
        elements: str
      domainname:
        description:
        - The pod's NIS domain name (C(domainname), C(uname -a)'s), as docker's C(domainname); the same rules
          as O(pods[].hostname). Unset - none, the kernel's C((none)).
        - Like O(pods[].hostname), it is compared only when given, and a change replaces the pod.
        type: str
      env_file:
        description:
        - Dotenv files read on the managed host (where the module runs) when the task runs, for every app -
          C(NAME=VALUE) lines, C(#) comments, an C(export) prefix, single quotes (literal) and double quotes
          (C(\\n), C(\\t), C(\\") escapes; both may span lines); nothing is expanded. A later file wins over
          an earlier one; O(pods[].environment) and O(pods[].secret_environment) win over them. Errors name
          the option, the file and the line.
        - Their values are compared as given (a changed file replaces the pod).
        type: list
        elements: path
      env_file_secret:
        description:
        - Treat the values of O(pods[].env_file) as O(pods[].secret_environment) does (digests only in the pod's
          spec, redacted in results and diffs).
        type: bool
        default: false
      environment:
        description:
        - Variables for every app; they override the image's.
        type: dict
        default: {}
      exec:
        description:
        - Replace the image's command.
        type: list
        elements: str
      exec_append:
        description:
        - Arguments appended to the command (rkt's exec appends).
        type: list
        elements: str
      extra_hosts:
        description:
        - More lines for the pod's C(/etc/hosts) on private networks - host name to IPv4 or IPv6 address.
        type: dict
      fail_on_app_error:
        description:
        - After waiting, fail the task when an app exited with a non-zero status.
        type: bool
        default: true
      group:
        description:
        - Group to run the app as - a name from the image's /etc/group, a number, or an absolute path.
        type: str
      healthcheck:
        description:
        - The app's healthcheck, as docker and podman run it. The keeper runs C(test) inside the app every C(interval),
          through stage1's enter - the app's namespaces, cgroups, root, user, capabilities, seccomp filter and
          environment, never more - and kills the probe's process group after C(timeout).
        - C(test) - a string (run by C(/bin/sh -c)), an argv list, or docker's forms C(["CMD", argv...]), C(["CMD-SHELL",
          "command"]), C(["NONE"]) (as C(disable)). Exit status 0 is a pass, anything else a failure.
        - C(interval), C(timeout) (default 30s each, at least 100ms), C(start_period) (default 0) - seconds,
          or durations such as C(30s), C(1m30s), C(500ms). C(retries) (default 3) - failures in a row that make
          the app C(unhealthy).
        - C(disable) - V(true) drops the check the image brings (and takes no other field).
        - C(on_failure) - V(none) (default) or V(restart) - an unhealthy app stops the pod and the keeper starts
          it again (with its backoff), whatever C(restart_policy) says; the pod's apps restart together, as
          one unit.
        - An OCI image's C(Healthcheck) is imported into the image (annotation C(appc.rocket/healthcheck));
          the fields given here override its fields, the rest are taken from it.
        - Status - C(starting) until a probe passes (failures within C(start_period) do not count), C(healthy),
          or C(unhealthy) after C(retries) failures in a row - in C(pod.apps[].health) with the failing streak
          and the last probe's exit code, output (first 4096 bytes) and times.
        - A change replaces the pod.
        type: dict
      hostname:
        description:
        - The pod's host name (default - C(rkt-) and the first 8 characters of its UUID), at most 64 characters;
          dot-separated labels of letters, digits, C(-) and C(_), since it also goes into the pod's C(/etc/hosts)
          and what its peers read. A bad name is refused before anything changes.
        type: str
      hostname_aliases:
        description:
        - More names for the pod's own address in its C(/etc/hosts), after O(pods[].hostname).
        type: list
        elements: str
      image:
        description:
        - Shorthand for a one-app pod - the image (ID, ID prefix, or C(name[:version][,label=value])).
        - The other app options (O(pods[].exec), O(pods[].user), ...) apply to this app.
        type: str
      inherit_env:
        description:
        - Give the apps the module's environment for variables they do not set.
        type: bool
        default: false
      ip:
        description:
        - A fixed IPv4 address of the pod on the first network of O(pods[].net); it must be a host address of
          that network's subnet other than its gateway (checked before anything changes, also in check mode),
          and no other pod may hold it (checked when the pod starts).
        - A change restarts the pod (as for every option below).
        type: str
      ip6:
        description:
        - A fixed IPv6 address on the first network of O(pods[].net), which needs C(subnet6) (a dual-stack network).
        type: str
      isolators:
        description:
        - appc isolators (C({name, value})) added to or replacing the image's.
        type: list
        elements: dict
      log_driver:
        description:
        - Where the apps' output goes (stdout and stderr share one pipe per app; each line is kept with its
          time).
        - V(file) - C(logs/<app>.log) in the pod's directory, rotated as O(pods[].log_max_size) and O(pods[].log_max_files)
          say.
        - V(journald) - the host's systemd journal (native protocol), one entry per line with C(SYSLOG_IDENTIFIER=<pod
          name>/<app>), C(APPC_POD_UUID), C(APPC_POD_NAME) and C(APPC_APP), so that C(journalctl -t web/nginx)
          or C(journalctl APPC_POD_NAME=web) finds them; the journal rotates them. Needs systemd-journald on
          the host (the task fails naming this option when its socket is missing). While journald does not take
          a line, the line goes to the file instead, with a note.
        - C(pod.apps[].log) (and M(appc.rocket.pod_info)'s) shows the last lines with both. See C(docs/logs.md).
        - A change replaces the pod (as every O(pods[].log_driver), O(pods[].log_max_size) and O(pods[].log_max_files)
          change).
        type: str
        choices:
        - file
        - journald
        default: file
      log_max_files:
        description:
        - With O(pods[].log_driver=file), the files an app's log keeps in all, the current one included (default
          2 - C(<app>.log) and C(<app>.log.1)); V(1) empties the file when it is full. At most 100.
        type: int
      log_max_size:
        description:
        - With O(pods[].log_driver=file), the size at which an app's log file rotates (default C(1m)), as C(10m),
          C(512k) (binary units) or bytes; at least C(4k).
        type: raw
      mac:
        description:
        - The MAC address of the pod's interface on the first network of O(pods[].net) (unicast; default - derived
          from the UUID).
        type: str
      memory:
        description:
        - The app's memory limit (docker's C(--memory)) as C(512m), C(1g), C(64MiB) (binary units) or bytes;
          at least C(6m). Becomes appc's C(resource/memory) limit. Without O(pods[].memory_swap) the app gets
          no swap. A change replaces the pod (as every limit below).
        type: raw
      memory_reservation:
        description:
        - The memory the app is reclaimed down to first under pressure (appc's C(resource/memory) request; C(memory.soft_limit_in_bytes)
          on cgroup v1, C(memory.low) on v2); at most O(pods[].memory).
        type: raw
      memory_swap:
        description:
        - Memory plus swap, as docker's C(--memory-swap) (needs O(pods[].memory), at least it); V(-1) for unlimited
          swap. C(rocket/memory-swap) isolator; reported not enforced without swap accounting.
        type: raw
      metadata_port:
        description:
        - TCP port of the metadata service when this task has to start it (V(0) takes any free port). A running
          service keeps its port; it moves only when it serves no pod.
        type: int
        default: 18112
      metadata_service:
        description:
        - Serve the appc metadata service to the pod's apps - C(AC_METADATA_URL) with a token only this pod
          knows; the data directory's service is started when it is not running.
        - Needs O(pods[].net=host) or a private network. A change replaces the running pod.
        - On a private network the token answers only from the pod's own addresses; with O(pods[].net=host)
          it answers from the host's loopback. The service never serves the values of O(pods[].secret_environment).
        type: bool
        default: false
      mounts:
        description:
        - Volumes mounted into the app.
        type: list
        elements: dict
        suboptions:
          path:
            description:
            - Absolute path in the app, without C(..) components.
            type: str
            required: true
          propagation:
            description:
            - Mount propagation of a V(host) volume's mount (C(--mount ...,bind-propagation=) of docker and
              podman). V(private) and V(rprivate) (the default) - nothing propagates either way.
            - V(slave) or V(rslave) - mounts made on the host under the source appear in the pod (when the host's
              mount of the source is shared); nothing the pod mounts reaches the host. Both are recursive here
              (every sub-mount a slave too, so none could send a mount out).
            - V(shared) or V(rshared) - the pod's mounts there appear on the host too; refused unless O(pods[].privileged=true)
              (a pod must not gain a way to mount onto the host).
            - Refused for other kinds of volume (nothing on the host propagates into them).
            type: str
            choices:
            - private
            - rprivate
            - slave
            - rslave
            - shared
            - rshared
          read_only:
            description:
            - This mount read-only (the volume's O(pods[].volumes[].read_only) makes every mount of it so).
            type: bool
          volume:
            description:
            - Name of a volume of the pod.
            type: str
            required: true
      name:
        description:
        - The pod's name (an AC Name). Every item names its pod.
        type: str
        required: true
      net:
        description:
        - V(host) shares the host's network; V(none) gives the pod only a loopback interface.
        - Anything else is a list of private networks to join, in order (C(eth0), C(eth1), ...) - V(default)
          (built in - point-to-point, 172.16.28.0/24, egress NAT) or networks defined in C(<data_dir>/net.d/*.json)
          or C(/etc/rocket/net.d/*.json) (see C(docs/networking.md)).
        - A private network turns on IPv4 forwarding on the host (C(net.ipv4.ip_forward=1)) and needs the C(nft)
          command (Debian package C(nftables)).
        - A change restarts the pod.
        type: list
        elements: str
        default:
        - host
      oom_score_adj:
        description:
        - The app's C(/proc/PID/oom_score_adj), from V(-1000) (never chosen by the kernel's OOM killer) to V(1000)
          (chosen first), as docker's and podman's C(--oom-score-adj). Unset - the runtime's own (0 unless the
          process running the module has another); its processes inherit it. appc's C(os/linux/oom-score-adj)
          isolator (an image's is overridden).
        type: int
      overlay:
        description:
        - V(auto) uses overlayfs where it works and copies the image trees where it does not; V(yes) requires
          overlayfs; V(no) always copies.
        type: str
        choices:
        - auto
        - 'yes'
        - 'no'
        default: auto
      paused:
        description:
        - V(true) pauses a running pod, as docker's C(paused) - every process of its apps stops where it is
          (the cgroup v2 freezer), memory and network state kept - and V(false) resumes it. Unset leaves it
          as it is; a pod this task starts or replaces is paused once it runs.
        - Pausing or resuming is a change of its own, never a replacement; the pod's C(paused) says which it
          is.
        - Only with O(pods[].state=running) and without O(pods[].wait).
        - A paused pod is still stopped and removed as usual (it is resumed first, so its apps get their stop
          signal); its health checks are skipped while it is paused; M(appc.rocket.pod_enter) and the connection
          refuse to enter it. A reboot ends a pause (a pod brought back by O(pods[].boot) runs).
        - Needs a cgroup2 hierarchy (a cgroup-v2 or hybrid host) and Linux 5.2 or later.
        type: bool
      pids_limit:
        description:
        - At most this many processes and threads in the app (the pids cgroup, v1 and v2); a fork bomb stops
          there. Unset - 2048 (podman's default), so that one app cannot take every PID of the host; V(-1) or
          V(0) for unlimited. C(rocket/pids) isolator.
        type: int
      ports:
        description:
        - Host ports forwarded to the pod on private networks (C(net) of M(appc.rocket.pod_run) other than V(host)
          and V(none); with V(host) apps bind the host's ports themselves). Traffic to the host port from other
          hosts, from the host itself and from C(127.0.0.1) reaches the app.
        - Either O(pods[].ports[].name) (a port an app declares in its image manifest's C(app.ports), as appc's
          pod manifest C(ports) does) or O(pods[].ports[].port) (a port number, with O(pods[].ports[].protocol)).
        - A change replaces the pod. Two pods cannot forward the same host port.
        type: list
        elements: dict
        suboptions:
          host_ip:
            description:
            - Forward only this host address (IPv4 or IPv6; default - every address of the host).
            - On a dual-stack network (C(subnet6)) a forward without O(pods[].ports[].host_ip) exists for both
              families; an IPv6 forward is reached on the host's IPv6 addresses, not on C(::1).
            type: str
          host_port:
            description:
            - Port on the host; a range V(9000-9009) of the length of O(pods[].ports[].port)'s range, or its
              first port.
            - V(0) picks a free port at each start (a single port, not a range); C(pod.networks) returns the
              chosen one in its first network's C(ports).
            type: raw
            required: true
          name:
            description:
            - Name of a port an app of the pod declares.
            type: str
          port:
            description:
            - Port number in the pod (instead of O(pods[].ports[].name)), or a range V(8000-8009) (at most 1024
              ports), forwarded port by port from the range of O(pods[].ports[].host_port).
            type: raw
          protocol:
            description:
            - Protocol of O(pods[].ports[].port) (a named port has its own).
            type: str
            choices:
            - tcp
            - udp
      private_users:
        description:
        - Run the pod's apps in a user namespace, so that root in the pod is an unprivileged user on the host.
        - V(false) - no shifted range - the apps still run in a user namespace, with every id mapped to itself,
          so that a host user with an app's uid cannot read its environment or root through /proc.
        - V(true) - 65536 host uids and gids from 2147483648 up, picked per pod name from a store in O(data_dir)
          (the same name gets the same range again, so its volumes keep their owners).
        - A number - the first host id of the range, as given (keep it apart from other users of host ids yourself).
        - The image's files keep their owners inside the pod (idmapped layers); host volumes are not shifted
          - files the pod's root creates there belong to the range's first id on the host.
        - A change restarts the pod. See docs/isolation.md.
        type: raw
        default: false
      privileged:
        description:
        - Run the pod's apps as docker's and podman's C(--privileged) does - every capability in the bounding
          set (root's effective set), no seccomp filter, no cgroup device allow-list, a C(/dev) the apps may
          make working device nodes in, and C(/proc) and C(/sys) without masked or read-only paths.
        - B(It gives away all isolation from the host:) a privileged app running as root is root on the host
          (it also stays in the host's user namespace). Use it only for trusted images that must manage the
          host (see docs/isolation.md).
        - Cannot be combined with O(pods[].cap_drop) or C(os/linux/capabilities-*) and C(os/linux/seccomp-*)
          isolators (it is an error, not a silent precedence); an image's own capability and seccomp isolators
          are overridden. A change replaces the pod.
        type: bool
        default: false
      pull:
        description:
        - When to pull a registry image (an image given as C(docker://...), see the collection's docs/registries.md)
          - V(never) uses only the store, V(new) (alias V(missing)) pulls when the reference was never pulled,
          V(update) (alias V(always)) asks the registry for the reference's digest and pulls only when it moved
          (then the pod is replaced, its image having changed).
        - Images named otherwise are taken from the store; M(appc.rocket.cas_image) imports them.
        type: str
        choices:
        - never
        - new
        - update
        - missing
        - always
        default: new
      read_only_rootfs:
        description:
        - Mount the app's root file system read-only.
        type: bool
        default: false
      registry:
        description:
        - How registry images (C(docker://...)) are pulled; as the options of M(appc.rocket.cas_image).
        type: dict
        suboptions:
          auth_file:
            description:
            - The auth file to read credentials from, instead of the default ones.
            type: path
          ca_path:
            description:
            - CA bundle for the registries' TLS, instead of the system's (and C(certs.d)).
            type: path
          cert_dir:
            description:
            - A C(certs.d)-style directory (C(<host:port>/ca.crt), client C(*.cert)/C(*.key)) instead of the
              system ones.
            type: path
          max_size:
            description:
            - Largest uncompressed image accepted, in bytes.
            type: int
            default: 8589934592
          platform:
            description:
            - The platform (C(os/arch[/variant])) taken from a multi-platform image; default this host's.
            type: str
          registries_conf:
            description:
            - A containers C(registries.conf) (mirrors, insecure registries) instead of C(/etc/containers/registries.conf).
            type: path
          require_digest:
            description:
            - Registries (or C(registry/repository) prefixes) whose references must be pinned by digest.
            type: list
            elements: str
            default: []
          retries:
            description:
            - Retries of a failed request or broken download.
            type: int
            default: 3
          timeout:
            description:
            - Seconds to wait for a registry to connect or send data.
            type: int
            default: 30
      restart:
        description:
        - Replace a running pod even when nothing changed.
        type: bool
        default: false
      restart_delay:
        description:
        - Seconds before the first restart (default 1); each quick exit doubles it up to O(pods[].restart_max_delay).
          A run that lasted more than 10 seconds starts over at this delay.
        type: float
      restart_max_delay:
        description:
        - The longest wait between restarts, in seconds (default 60).
        type: float
      restart_policy:
        description:
        - What the keeper does when the pod exits, as docker's and podman's C(--restart) - V(no), V(always),
          V(on-failure) (a non-zero exit), V(on-failure:N) (at most N restarts, as O(pods[].restart_retries))
          or V(unless-stopped).
        - A stop by the user (O(pods[].state=exited), a replacement) never triggers a restart. When a keeper
          is started again on an exited pod (a keeper that died, or a boot-time restore), V(always) brings the
          pod back even after a user's stop, V(unless-stopped) only when the user did not stop it, V(on-failure)
          only when its last run failed and retries are left (docker's rules).
        - The pod's C(pod.restart) shows the policy, the restarts so far and whether the user stopped it.
        - A change replaces the pod.
        type: str
        default: 'no'
      restart_retries:
        description:
        - With O(pods[].restart_policy=on-failure), the most restarts (0, the default, for no cap).
        type: int
      secret_environment:
        description:
        - Like O(pods[].environment), for values that must never appear in results, diffs or logs. Only their
          digest is kept in the pod's spec; the pod files holding them are mode 0600.
        type: dict
        default: {}
      secrets:
        description:
        - Files holding secrets, mounted read-only in the app from a root-only tmpfs that exists only in the
          pod's mount namespace, never in the environment, C(spec.json) (only their SHA-256), results, diffs,
          logs or the pod directory. docker's and podman's C(--secret).
        - The data reaches stage1 in a sealed memfd that the pod's keeper holds for its restarts; once the keeper
          is gone (a reboot), the pod starts again only from a task that gives the secrets. A changed content
          replaces the pod (the diff shows it redacted).
        type: list
        elements: dict
        suboptions:
          content:
            description:
            - The secret (one of O(pods[].secrets[].content) and O(pods[].secrets[].source)); at most 1 MiB.
            type: str
          gid:
            description:
            - The file's group in the app (default 0).
            type: int
          mode:
            description:
            - The file's mode (octal string or number; default C(0400)).
            type: raw
          name:
            description:
            - Letters, digits, C(.), C(_) and C(-); unique in the app.
            type: str
            required: true
          source:
            description:
            - A file on the managed host read when the task runs (not a symlink).
            type: path
          target:
            description:
            - Where the app sees it; a relative path is under C(/run/secrets) (default C(/run/secrets/<name>)).
            type: str
          uid:
            description:
            - The file's owner in the app (default 0); give the app's user for a non-root app.
            type: int
      shm_size:
        description:
        - Size of the app's C(/dev/shm) (V(64m) without). Each app of a pod has its own C(/dev/shm), so it is
          per app. C(rocket/shm-size) isolator.
        type: raw
      stage1_image:
        description:
        - A stage1 image from the store instead of the default one.
        type: str
      state:
        description:
        - V(running) keeps the pod running.
        - V(exited) runs the pod once to completion (a job) or stops it when it runs.
        - V(absent) stops and removes the pod.
        - V(healthy) is V(running), and the task then waits (up to O(pods[].wait_timeout), without a limit when
          unset - the checks always end in a verdict) until every app with a healthcheck is C(healthy); it fails
          with the probe's output as soon as one is C(unhealthy), or when the pod stops, or at the timeout.
          Not with O(pods[].wait). A pod none of whose apps has a check fails.
        type: str
        choices:
        - running
        - exited
        - absent
        - healthy
        default: running
      stop_signal:
        description:
        - The signal the app gets when the pod is stopped - a name (V(SIGQUIT), V(QUIT), V(SIGRTMIN+3)) or a
          number (V(3)), as docker's and podman's C(stop_signal).
        - Default - the image's OCI C(StopSignal) (kept by the OCI import as the image annotation C(appc.rocket/oci/stop-signal)),
          else V(SIGTERM). SIGKILL follows when the app has not exited after its stop timeout (C(apps[].stop_timeout),
          else pod_run's C(stop_timeout)).
        - Kept as the pod manifest app annotation C(rocket/stop-signal) (appc has no field for it). A change
          replaces the pod.
        type: str
      stop_timeout:
        description:
        - Seconds between the apps' stop signal (O(pods[].stop_signal), SIGTERM by default) and SIGKILL when
          the pod is stopped or replaced, for every app without its own C(apps[].stop_timeout) (an app's own
          wins).
        type: int
        default: 10
      supplementary_gids:
        description:
        - Supplementary group IDs.
        type: list
        elements: int
      sysctls:
        description:
        - Kernel parameters of the pod's own namespaces, as docker's and podman's C(sysctls), a dictionary of
          names (C(net.ipv4.tcp_keepalive_time) or C(net/ipv4/tcp_keepalive_time)) and values; the apps share
          them, as they share the pod's network and IPC namespaces. Written by stage1 before any app starts,
          as appc's pod-level C(os/unix/sysctl) isolator.
        - Only C(net.*) (not with M(appc.rocket.pod_run)'s C(net=host)) and the IPC namespace's C(kernel.shm*),
          C(kernel.msg*), C(kernel.sem) and C(fs.mqueue.*); anything else would change the whole host and is
          refused before anything changes, as is a value an app's own C(os/unix/sysctl) isolator sets otherwise.
        - A change replaces the pod.
        type: dict
      ulimits:
        description:
        - Resource limits (C(RLIMIT_*)) set in the app's process before it starts, a list of C({name, soft,
          hard}) or C(nofile=1024:2048) strings; V(-1) or C(unlimited) for no limit, hard defaults to soft.
          Names - C(nofile), C(nproc), C(core), C(memlock), C(stack) and the other C(RLIMIT_) names, lower case.
          C(rocket/ulimits) isolator.
        type: list
        elements: raw
      unsetenv:
        description:
        - Variables of the image's environment that the app does without, as podman's C(--unsetenv). Only the
          image's are taken away; what the task sets (O(pods[].environment), O(pods[].secret_environment), O(pods[].env_file))
          is set anyway, and O(pods[].inherit_env) may give a name back from the module's environment. C(PATH),
          C(AC_APP_NAME), C(AC_METADATA_URL) and C(container) are always set, as the appc spec requires (C(PATH)
          to the spec's default when the image's is taken away). A change replaces the pod.
        type: list
        elements: str
      unsetenv_all:
        description:
        - Take away the image's whole environment, as podman's C(--unsetenv-all) (see O(pods[].unsetenv)).
        type: bool
        default: false
      update_stage1:
        description:
        - Replace the pod when a newer default stage1 is available. By default a newer stage1 is only reported
          (C(stage1_update_available)) - upgrading the collection never restarts a fleet.
        type: bool
        default: false
      user:
        description:
        - User to run the app as - a name from the image's /etc/passwd, a number, or an absolute path (its owner).
          A colon is refused (C(root:0)); give the group in O(pods[].group).
        type: str
      volumes:
        description:
        - The pod's volumes.
        type: list
        elements: dict
        suboptions:
          gid:
            description:
            - Group of an V(empty) or V(tmpfs) volume, or of a V(named) one it creates.
            type: int
            default: 0
          kind:
            description:
            - V(host) binds a host directory, V(empty) gives a fresh directory.
            - V(named) mounts the named volume O(pods[].volumes[].volume_name) (default O(pods[].volumes[].name)),
              kept under C(<data_dir>/volumes/<name>/data) and outliving the pod (M(appc.rocket.pod_volume)).
              It is created on first use with O(pods[].volumes[].mode), O(pods[].volumes[].uid) and O(pods[].volumes[].gid);
              an existing one keeps its own (podman's rule). With C(private_users) it is mounted idmapped, so
              files keep the ids the pod sees and pods with other ranges (or none) share them.
            - V(tmpfs) mounts a memory file system (C(nosuid), C(nodev)) of O(pods[].volumes[].size), mode and
              owner, one per pod, shared by its apps and gone with the pod.
            - Without O(pods[].volumes[].kind) a volume is V(empty); a volume with O(pods[].volumes[].source)
              must say V(host), or the module fails (the user's data would otherwise go to an empty volume).
            type: str
            choices:
            - host
            - empty
            - named
            - tmpfs
          mode:
            description:
            - Octal mode of an V(empty) or V(tmpfs) volume, or of a V(named) one it creates.
            - Default C(0755), for V(tmpfs) C(1777).
            type: str
          name:
            description:
            - Volume name (an AC Name, at most 128 bytes).
            type: str
            required: true
          read_only:
            description:
            - Mount read-only.
            type: bool
            default: false
          recursive:
            description:
            - Bind sub-mounts too (V(host) volumes).
            type: bool
            default: true
          size:
            description:
            - Size limit of a V(tmpfs) volume, in bytes or with C(k), C(m), C(g) (powers of 1024), e.g. V(64m).
              Writes beyond it fail with C(ENOSPC). Default the kernel's (half the host's memory).
            type: raw
          source:
            description:
            - Host path for V(host) volumes, absolute, without C(..). It must exist, and no component of it
              may be a symlink, whoever owns it (give the resolved path); this is checked at prepare and again
              at every start and restart.
            type: path
          uid:
            description:
            - Owner of an V(empty) or V(tmpfs) volume, or of a V(named) one it creates (as the pod sees it).
            type: int
            default: 0
          volume_name:
            description:
            - The named volume a V(named) volume mounts (an AC Name); default O(pods[].volumes[].name).
            type: str
      wait:
        description:
        - With O(pods[].state=running), wait until the pod exits and return each app's exit code and output.
        type: bool
        default: false
      wait_timeout:
        description:
        - Seconds to wait for the pod to exit (with O(pods[].wait) or O(pods[].state=exited)), or to be healthy
          (O(pods[].state=healthy)); no limit when unset.
        type: int
      working_dir:
        description:
        - Working directory of the app (absolute).
        type: str
attributes:
  check_mode:
    support: full
    details:
      - Every item walks the same comparison as in a real run; nothing is imported, prepared,
        started, stopped or removed.
      - A pod whose image the same task would import (a new image of the name it refers to)
        is reported as replaced.
  diff_mode:
    support: full
    details: One diff per changed image and pod, under a header naming it; secret values redacted.
  platform:
    platforms: posix
    details: Linux, as root.
notes:
  - Runs on the target host with Python 3.8 or newer and its standard library.
  - Use M(appc.rocket.pod_run) for one pod, or when a pod's result must be registered on its own.
seealso:
  - module: appc.rocket.pod_run
  - module: appc.rocket.cas_image
"""

EXAMPLES = r"""
- name: Import two images and keep three pods running, removing pods no longer declared
  appc.rocket.pod_set:
    managed_by: web-playbook
    purge: true
    images:
      - src: /srv/images/nginx-1.25.aci
      - src: /srv/images/app-2.0.aci
    pods:
      - name: web
        image: example.com/nginx:1.25
        restart_policy: always
      - name: app
        image: example.com/app:2.0
        secret_environment:
          DB_PASSWORD: "{{ vault_db_password }}"
      - name: migrate
        image: example.com/app:2.0
        exec: [/app/migrate]
        state: exited

- name: Remove a pod and an image
  appc.rocket.pod_set:
    pods:
      - name: old
        state: absent
    images:
      - name: example.com/old:1.0
        state: absent
"""

RETURN = r"""
images:
  description: The result of each image, in order, as M(appc.rocket.cas_image) returns it (C(changed), C(image), ...).
  returned: always
  type: list
  elements: dict
pods:
  description:
    - The result of each pod, in order, as M(appc.rocket.pod_run) returns it, and its C(name) -
      C(changed), C(action), C(reasons), C(pod).
  returned: always
  type: list
  elements: dict
purged:
  description: Names of the pods O(purge) removed (would remove, in check mode).
  returned: always
  type: list
  elements: str
"""

from ansible_collections.appc.rocket.plugins.module_utils import bytecode  # first: it serves the imports after it
from ansible_collections.appc.rocket.plugins.module_utils import pod_set


def spec():
    """AnsibleModule's arguments; the action checks a task's arguments against them too
    (plugin_utils/module_action.py, the direct path)."""
    return dict(argument_spec=pod_set.argument_spec(), supports_check_mode=True)


def task(module):
    """The task, given AnsibleModule or the direct path's stand-in (plugin_utils/thin_module.py)."""
    bytecode.save(not module.check_mode)
    pod_set.run(module)


def main():
    from ansible.module_utils.basic import AnsibleModule  # here: the direct path imports this file without it

    task(AnsibleModule(**spec()))


if __name__ == "__main__":
    main()

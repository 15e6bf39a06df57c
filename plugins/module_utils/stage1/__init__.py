"""The default stage1 (interface version 1; see docs/stage1-contract.md).

Imported as ansible_collections.appc.rocket.plugins.module_utils.stage1 by stage0 (which
builds the stage1 image from image.files() and image.manifest()) and, inside a pod, as
the top-level package `stage1` by the launchers rootfs/init, rootfs/enter, rootfs/gc and
rootfs/keeper. Standard library only; intra-package imports are relative; nothing here
imports ansible or stage0. Kept empty so that importing one program imports only what it
needs.

Programs (each has a main(), or is the code of a process of its own):
  init    the run entrypoint: the pod's outer process, then its PID 1
  enter   the enter entrypoint: runs a command as an app of a running pod runs
  gc      the gc entrypoint: undoes what run set up outside the pod directory
  keeper  the detached pod's parent on the host: lock, logs, restarts, exit record
  app     the app supervisor, one process per app forked by PID 1, and the app's exec
  launch  the child that stage0's foreground run or the keeper forks: mounts, then init
Libraries (imported by the programs; stage0 and the connection plugin import some too:
contract, image, launch, linux, jsonlite, cgroups, firewall, isolators, paths):
  contract  what stage0 and stage1 agree on: exit status, environment, file names
  image     the image's files and manifest (stage0 only: the image is built from them)
  cgroups, firewall, isolators, jsonlite, linux, mounts, net, netlink, paths, pod,
  seccomp, syscalls, userns, users, volumes
"""

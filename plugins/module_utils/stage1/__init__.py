"""The default stage1 (interface version 1; see docs/stage1-contract.md).

Imported as ansible_collections.appc.rocket.plugins.module_utils.stage1 by stage0 (which
builds the stage1 image from image.files() and image.manifest()) and, inside a pod, as
the top-level package `stage1` by the launchers rootfs/init, rootfs/enter and rootfs/gc.
Standard library only; intra-package imports are relative; nothing here imports ansible
or stage0. Kept empty so that importing one program imports only what it needs.
"""

# tests/verify: fbt-audit verify (QEMU boots of kmod/ probes), its log classes and its initramfs.

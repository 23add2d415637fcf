"""verify: prove verdicts by execution: arm kmod/'s probes in a Debian kernel booted under QEMU, classify its log."""

"""fbt_audit: static auditor and patch-safety linter for int3-based FBT probes on x86-64 Linux kernels."""

__version__ = "0.1.0"

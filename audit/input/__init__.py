"""input/: load: a path -> a Kernel (ELF, vmlinuz, compressed modules, symbol sources, DWARF source lines)."""

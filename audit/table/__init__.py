"""table/: match: the emulation table read back from an ELF section, and Insn x table -> entry."""

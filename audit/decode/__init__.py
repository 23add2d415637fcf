"""decode/: decode: bytes -> arch-neutral Insn (the only capstone importer), and instruction lengths in bulk."""

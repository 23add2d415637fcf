"""errors.py: tool errors (bad input, broken tables), kept apart from findings; each is one line, exit 2."""


class AuditError(Exception):
    """A tool error: the run cannot judge this input. Its message is one line for stderr."""

    exit_code = 2


class InputError(AuditError):
    """The input path is missing, unreadable or not something fbt-audit reads."""


class ElfFormatError(InputError):
    """The file is ELF but malformed, of the wrong class or machine, or lacks what is needed."""


class TableFormatError(AuditError):
    """An emulation table is missing, of the wrong ABI version, or inconsistent in size."""


class UsageError(AuditError):
    """The command line asks for something that cannot be done."""

"""errors.py: tool errors (bad input, broken tables), kept apart from findings; each is one line, exit 2."""


def one_line(text: str) -> str:
    """text as one printable line: characters that would end or rewrite the line (CR, LF, U+2028, ESC and
    the other controls), which a hostile file can put in a section or symbol name, are escaped as by repr()."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


class AuditError(Exception):
    """A tool error: the run cannot judge this input. Its message is one line for stderr."""

    exit_code = 2

    def __str__(self) -> str:
        return one_line(super().__str__())


class InputError(AuditError):
    """The input path is missing, unreadable or not something fbt-audit reads."""


class ElfFormatError(InputError):
    """The file is ELF but malformed, of the wrong class or machine, or lacks what is needed."""


class TableFormatError(AuditError):
    """An emulation table is missing, of the wrong ABI version, or inconsistent in size."""


class UsageError(AuditError):
    """The command line asks for something that cannot be done."""

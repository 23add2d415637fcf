"""start.py: the `fbt-audit` console entry: the cyclic collector off before the command line's imports, then main."""

from __future__ import annotations

import gc


def entry() -> None:
    """Run the command line (cli.main.entry). A one-shot process: the collector would only rescan the objects the
    imports create (click, numpy, capstone: 10-20 ms of a 0.4 s vmlinux audit); the audit keeps it off
    (cli.audit.run_audit) and every other verb turns it back on (cli.main.DefaultGroup.get_command)."""
    gc.disable()
    from fbt_audit.cli.main import entry as main_entry

    main_entry()

"""deps.py: the one place verify imports the rest of fbt_audit, in the flat layout or the stage packages."""

from __future__ import annotations

# The flat layout (this branch) and the stage packages (audit/ restructured on main) hold the same functions
# under different modules; after the merge, keep the first branch and delete the fallback.
try:
    from fbt_audit.investigate import bisect
    from fbt_audit.model.errors import InputError, UsageError
    from fbt_audit.pipeline.api import audit
    from fbt_audit.report.formats import render
except ImportError:
    from fbt_audit import bisect  # type: ignore[no-redef]
    from fbt_audit.api import audit  # type: ignore[no-redef]
    from fbt_audit.errors import InputError, UsageError  # type: ignore[no-redef]
    from fbt_audit.report import render  # type: ignore[no-redef]
from fbt_audit.report.listing import render_list

__all__ = ["InputError", "UsageError", "audit", "bisect", "cli_run", "render", "render_list"]


def cli_run(argv: list[str]) -> int:
    """fbt-audit's run(): the CLI with every failure mapped to an exit code (for tests)."""
    try:
        from fbt_audit.cli.main import run
    except ImportError:
        from fbt_audit.cli import run  # type: ignore[no-redef]
    return run(argv)

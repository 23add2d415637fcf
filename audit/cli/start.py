"""start.py: the `fbt-audit` console entry: the cyclic collector off before the command line's imports; `fbt-audit
PATH [-j N]` runs the audit without click (cli/run.py), every other command line through cli.main."""

from __future__ import annotations

import gc
import os
import sys

# The verbs of cli.main.LAZY (tests/test_cli_plain.py): a first word among them is not a path.
VERBS = ("audit", "table", "rules", "explain", "check-list", "rank", "map", "bisect", "verify")


def entry() -> None:
    """Run the command line (cli.main.run), then leave. A one-shot process: the collector would only rescan the
    objects the imports create (click, numpy: 10-20 ms of a 0.4 s vmlinux audit); the audit keeps it off
    (cli.run.run_audit) and every other verb turns it back on (cli.main.DefaultGroup.get_command)."""
    gc.disable()
    plain = plain_args(sys.argv[1:])
    if plain is not None:
        code = run_plain(*plain)
        if code is not None:
            leave(code)
    from fbt_audit.cli.main import run

    leave(run())


def plain_path(arg: str) -> bool:
    """Whether `fbt-audit ARG` audits the path ARG with every option at its default: no option, no verb, no shell
    completion asked of click. By hand: click's import and its parse of 25 options cost a quarter of the work an
    entry audit of a vmlinux does past numpy."""
    return bool(arg) and arg[0] != "-" and arg not in VERBS and "_FBT_AUDIT_COMPLETE" not in os.environ


def plain_args(args: list[str]) -> tuple[str, int | None] | None:
    """(PATH, jobs) of `fbt-audit PATH` or `fbt-audit PATH -j N` (-jN, --jobs N, --jobs=N, before or after PATH; N a
    positive decimal): the command lines run without click; None for any other (click parses it, and says what is
    wrong with a bad N)."""
    jobs = None
    rest = list(args)
    for k, a in enumerate(rest):
        if a in ("-j", "--jobs") and k + 1 < len(rest):
            value, del_at = rest[k + 1], (k, k + 2)
        elif a.startswith("--jobs="):
            value, del_at = a[7:], (k, k + 1)
        elif a.startswith("-j") and a != "-j":
            value, del_at = a[2:], (k, k + 1)
        else:
            continue
        if not (value.isascii() and value.isdigit() and int(value) >= 1):
            return None
        jobs = int(value)
        del rest[del_at[0] : del_at[1]]
        break
    if len(rest) != 1 or not plain_path(rest[0]):
        return None
    return rest[0], jobs


def run_plain(path: str, jobs: int | None = None) -> int | None:
    """The exit code of `fbt-audit PATH` run as the audit verb runs it (cli.run.run_audit); None when a settings file
    gives values: click's parse then merges them."""
    from fbt_audit.cli.run import AuditSettings, run_audit

    try:
        settings = AuditSettings.plain(path, jobs)
        if settings is None:
            return None
        run_audit(settings)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
    except BaseException as e:  # noqa: BLE001  errors as cli.main says them (it imports click then)
        from fbt_audit.cli.main import exit_code

        return exit_code(e)
    return 0


def leave(code: int) -> None:
    """Leave without tearing the heap down: freeing a vmlinux audit's million objects one by one takes longer than
    rendering them (mypy exits the same way). Only the buffered output needs a flush."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (BrokenPipeError, ValueError):  # a reader that went away, or a closed stream
            pass
    os._exit(code)

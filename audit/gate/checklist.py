"""checklist.py: `fbt-audit check-list LIST IMAGE`: a probe-safety list or denylist applies only to its own build."""

from __future__ import annotations

import re
from pathlib import Path

from fbt_audit.model.errors import InputError, UsageError

_RELEASE = re.compile(r"^# release (\S+) build-id (\S+)(?: image (.+))?$")


def identities(path: str | Path) -> list[tuple[str, str]]:
    """The (release, build id) pairs a list's header names; UsageError when it names none."""
    p = Path(path)
    try:
        with open(p, encoding="utf-8", errors="replace") as f:
            head = []
            for line in f:
                if not line.startswith("#"):
                    break
                head.append(line.rstrip("\n"))
    except OSError as e:
        raise InputError(f"{p}: {e.strerror}") from None
    if not head or not head[0].startswith("# fbt-audit "):
        raise UsageError(f"{p}: not a probe-safety list or denylist (no '# fbt-audit' header)")
    out = [(m.group(1), m.group(2)) for m in map(_RELEASE.match, head) if m]
    if not out:
        raise UsageError(f"{p}: the header names no release and build id")
    return out


def check(list_path: str | Path, image: str | Path) -> str:
    """The one line to print when the list was made for this image's build; else a UsageError (exit 2)
    saying which build the list is for. An image without a build id, or a list without one, is refused."""
    from fbt_audit.input.loader import load_input

    ids = identities(list_path)
    k = load_input(image)
    if not k.build_id:
        raise UsageError(f"{image}: the image has no GNU build id (.notes); no list can be checked against it")
    for _release, build_id in ids:
        if build_id == k.build_id:
            return f"{list_path}: matches {image} (release {k.release or '-'} build-id {k.build_id})"
    want = ", ".join(f"build-id {b} (release {r})" for r, b in ids)
    raise UsageError(
        f"{list_path}: made for {want}, but {image} is build-id {k.build_id} (release {k.release or '-'}): refused"
    )

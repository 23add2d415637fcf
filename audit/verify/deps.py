"""deps.py: the one place verify imports the rest of fbt_audit (the stages before it)."""

from __future__ import annotations

from fbt_audit.investigate import bisect
from fbt_audit.model.core import Level
from fbt_audit.model.errors import InputError, UsageError
from fbt_audit.pipeline.api import audit
from fbt_audit.report.formats import render
from fbt_audit.report.listing import render_list
from fbt_audit.table.emulation import NAMED as NAMED_TABLES

__all__ = ["NAMED_TABLES", "InputError", "Level", "UsageError", "audit", "bisect", "render", "render_list"]


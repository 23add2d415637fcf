"""config.py: settings from fbt-audit.toml or [tool.fbt-audit] in pyproject.toml; command-line flags override them."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fbt_audit.model.errors import UsageError

# The keys a settings file may hold, with the type each takes. Paths are relative to the file.
KEYS: dict[str, type | tuple[type, ...]] = {
    "table": str,
    "format": str,
    "fail-on": str,
    "show": str,
    "select": list,
    "ignore": list,
    "baseline": str,
    "allowlist": str,
    "source-root": str,
    "path-prefix-map": list,
    "statistics": bool,
}
PATH_KEYS = ("baseline", "allowlist")  # source-root is a path of the build machine: kept as written


@dataclass
class Settings:
    path: str | None = None  # the file they came from; None: defaults only
    values: dict[str, Any] = field(default_factory=dict)

    def get(self, key: str, default: Any = None) -> Any:
        return self.values.get(key, default)


def _read(path: Path) -> dict[str, Any]:
    import tomllib  # here: only a run with a settings file pays its import

    try:
        return tomllib.loads(path.read_text())
    except OSError as e:
        raise UsageError(f"{path}: cannot read: {e.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise UsageError(f"{path}: not valid TOML: {e}") from None


def _check(path: Path, table: dict[str, Any], where: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in table.items():
        want = KEYS.get(key)
        if want is None:
            raise UsageError(f"{path}: unknown setting {where}{key!r}; settings are {', '.join(KEYS)}")
        if not isinstance(value, want):
            raise UsageError(f"{path}: setting {where}{key!r} must be a {getattr(want, '__name__', want)}")
        if isinstance(value, list) and not all(isinstance(v, str) for v in value):
            raise UsageError(f"{path}: setting {where}{key!r} must be a list of strings")
        if key in PATH_KEYS:
            value = str(path.parent / value) if not Path(value).is_absolute() else value
        if key == "table" and ("/" in value or value.endswith((".ko", ".o", ".fbt"))):
            value = str(path.parent / value) if not Path(value).is_absolute() else value
        out[key] = value
    return out


def load(explicit: str | Path | None = None, start: str | Path | None = None) -> Settings:
    """`explicit` (--config) if given; else the first fbt-audit.toml, or pyproject.toml holding
    [tool.fbt-audit], in `start` (the working directory) or a parent of it."""
    if explicit is not None:
        p = Path(explicit)
        doc = _read(p)
        if p.name == "pyproject.toml":
            doc = doc.get("tool", {}).get("fbt-audit", {})
            return Settings(str(p), _check(p, doc, "tool.fbt-audit."))
        return Settings(str(p), _check(p, doc, ""))
    here = Path(start or Path.cwd()).resolve()
    for d in (here, *here.parents):
        own = d / "fbt-audit.toml"
        if own.is_file():
            return Settings(str(own), _check(own, _read(own), ""))
        py = d / "pyproject.toml"
        if py.is_file():
            tool = _read(py).get("tool", {})
            if "fbt-audit" in tool:
                return Settings(str(py), _check(py, tool["fbt-audit"], "tool.fbt-audit."))
    return Settings()


# Settings key -> the audit command's parameter name, for the keys that map one to one.
PARAMS = {
    "table": "table_spec",
    "format": "fmt",
    "fail-on": "fail_on",
    "show": "show",
    "select": "select",
    "ignore": "ignore",
    "baseline": "baseline",
    "allowlist": "allowlist",
    "source-root": "source_root",
    "path-prefix-map": "path_prefix_map",
    "statistics": "statistics",
}


def merge(ctx, settings: Settings, params: dict[str, Any]) -> dict[str, Any]:
    """The command's parameters with the file's settings filling in every flag the command line left
    at its default (flags given on the command line win). Choices are checked as click would."""
    from click.core import ParameterSource

    out = dict(params)
    for key, value in settings.values.items():
        name = PARAMS[key]
        if ctx.get_parameter_source(name) not in (ParameterSource.DEFAULT, None):
            continue
        param = next((p for p in ctx.command.params if p.name == name), None)
        if param is not None and getattr(param.type, "choices", None) and value not in param.type.choices:
            raise UsageError(
                f"{settings.path}: setting {key!r} is {value!r}; choose from {', '.join(param.type.choices)}"
            )
        out[name] = tuple(value) if isinstance(value, list) else value
    return out

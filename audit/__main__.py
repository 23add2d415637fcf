"""__main__.py: `python -m fbt_audit` runs the command line."""

from .cli import entry

entry()

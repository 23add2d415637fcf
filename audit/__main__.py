"""__main__.py: `python -m fbt_audit` runs the command line."""

from fbt_audit.cli.start import entry

entry()

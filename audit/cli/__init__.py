"""cli/: the command line: options into settings, verbs, exit codes."""

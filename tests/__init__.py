"""tests: the fbt-audit test suite."""

"""report/: render: AuditResults -> text, json, sarif, list, denylist, github, html; one dispatcher (formats.py)."""

"""sites/: what the kernel says about each site: its runtime-patch, trap and deny tables, as facts and variants."""

"""pipeline/: one audit and many: load -> enumerate -> annotate -> judge, across worker processes for trees."""

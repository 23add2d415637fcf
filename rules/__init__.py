"""rules: one module per FBT rule; each defines one Rule subclass whose docstring is its documentation."""

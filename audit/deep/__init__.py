"""deep/: the --deep stage after judge: flags paths of the flagged patchpoints, value tracking (angr) if installed."""

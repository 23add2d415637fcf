"""gate/: the release gate: finding identity (fingerprints, run ids), baselines, allowlists, list checks."""

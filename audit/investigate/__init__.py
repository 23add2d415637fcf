"""investigate/: the investigator's hunt: runtime hit counts, rarity ranking, bisection sets."""

"""judge/: judge: patchpoints x table x rules -> findings and one verdict each (the rules live in rules/)."""

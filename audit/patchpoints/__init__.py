"""patchpoints/: enumerate: a Kernel -> entry and return patchpoints, moved past what the table moves past."""

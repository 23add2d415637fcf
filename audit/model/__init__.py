"""model/: the vocabulary every stage shares: instructions, patchpoints, findings, the table ABI, the image, errors."""

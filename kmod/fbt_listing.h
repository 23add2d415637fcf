/* SPDX-License-Identifier: GPL-2.0 */
/*
 * fbt_listing.h: the emulation table as text, in the layout of `fbt-audit table` (table_text.py).
 */
#ifndef FBT_LISTING_H
#define FBT_LISTING_H

#include "fbt_table.h"

/*
 * Format table t (already checked by fbt_table_check()) into buf: the header settings, a blank
 * line, then one aligned row per entry under "#  match  mnemonic  handling  fixups". source and
 * sha256 are the values of the "source:" and "sha256:" lines. Returns the length of the whole
 * text, as snprintf() does; the text is NUL-terminated and truncated when size is too small.
 */
unsigned long fbt_format_table(const struct fbt_emu_table *t, const char *source,
			       const char *sha256, char *buf, unsigned long size);

#endif /* FBT_LISTING_H */

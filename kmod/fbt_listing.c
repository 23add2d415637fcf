// SPDX-License-Identifier: GPL-2.0
/*
 * fbt_listing.c: format the emulation table exactly as `fbt-audit table` prints it.
 *
 * audit/report/table_text.py is the reference layout; tests/test_kmod_engine.py compares this
 * output with it byte for byte for every named table. Plain C: vsnprintf() is the only call,
 * and the kernel and libc both have it.
 */
#ifdef __KERNEL__
#include <linux/kernel.h>
#include <linux/stdarg.h>
#else
#include <stdarg.h>
#include <stdio.h>
#define __printf(a, b)	__attribute__((format(printf, a, b)))
#define ARRAY_SIZE(a)	(sizeof(a) / sizeof((a)[0]))
#endif

#include "fbt_listing.h"

struct fbt_out {
	char		*buf;
	unsigned long	size;
	unsigned long	len;
};

static __printf(2, 3) void fbt_put(struct fbt_out *o, const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	if (o->len < o->size)
		n = vsnprintf(o->buf + o->len, o->size - o->len, fmt, ap);
	else
		n = vsnprintf((char *)0, 0, fmt, ap);
	va_end(ap);
	if (n > 0)
		o->len += n;
}

static const char *const fbt_handling_names[] = {
	"none", "emulate", "step", "refuse", "move", "ftrace",
};

static const char *const fbt_target_names[] = {
	"any", "fentry", "return_thunk", "indirect_thunk",
};

/* Fixup bits in bit order, as table_text.fixup_names() spells them. */
static const char *const fbt_fixup_names[] = {
	"pushed_flags", "live_if", "rip_disp", "branch_target", "return_addr", "rep_cont",
	"transfer_ip",
};

static const char *fbt_name(const char *const *names, unsigned int n, unsigned int v)
{
	return v < n ? names[v] : "?";
}

#define FBT_NAME(names, v)	fbt_name(names, ARRAY_SIZE(names), v)

static void fbt_put_fixups(struct fbt_out *o, __u32 fx)
{
	unsigned int i, any = 0;

	for (i = 0; i < ARRAY_SIZE(fbt_fixup_names); i++) {
		if (fx & (1U << i)) {
			fbt_put(o, "%s%s", any ? "," : "", fbt_fixup_names[i]);
			any = 1;
		}
	}
	if (!any)
		fbt_put(o, "-");
}

/* A fixed char array up to its first NUL. */
static int fbt_strnlen(const char *s, int max)
{
	int n = 0;

	while (n < max && s[n])
		n++;
	return n;
}

/* Entry.describe_match(): pfx=.., rex&..=.., opcode bytes [/mask], modrm&..=.., ->target. */
static void fbt_put_match(struct fbt_out *o, const struct fbt_emu_entry *e)
{
	unsigned int i, n = 0;

	for (i = 0; i < sizeof(e->prefix); i++) {
		if (!e->prefix[i])
			continue;
		fbt_put(o, n++ ? " %02x" : "pfx=%02x", e->prefix[i]);
	}
	if (n && (e->match_flags & FBT_M_EXACT_PREFIX))
		fbt_put(o, "!");
	if (n)
		fbt_put(o, " ");
	if (e->rex_mask)
		fbt_put(o, "rex&%02x=%02x ", e->rex_mask, e->rex_value);
	for (i = 0; i < e->opcode_len && i < sizeof(e->opcode); i++)
		fbt_put(o, i ? " %02x" : "%02x", e->opcode[i]);
	if (e->opcode_mask != 0xff)
		fbt_put(o, "/%02x", e->opcode_mask);
	if (e->modrm_mask)
		fbt_put(o, " modrm&%02x=%02x", e->modrm_mask, e->modrm_value);
	if (e->target != FBT_T_ANY)
		fbt_put(o, " ->%s", FBT_NAME(fbt_target_names, e->target));
}

/* Print one cell into a scratch buffer to measure it. */
enum { FBT_COL_INDEX, FBT_COL_MATCH, FBT_COL_MNEM, FBT_COL_HANDLING, FBT_COL_FIXUPS, FBT_NCOL };

static const char *const fbt_columns[FBT_NCOL] = { "#", "match", "mnemonic", "handling", "fixups" };

static void fbt_put_cell(struct fbt_out *o, const struct fbt_emu_table *t, unsigned int i, int col)
{
	const struct fbt_emu_entry *e = &t->entries[i];

	switch (col) {
	case FBT_COL_INDEX:
		fbt_put(o, "%u", i);
		break;
	case FBT_COL_MATCH:
		fbt_put_match(o, e);
		break;
	case FBT_COL_MNEM:
		fbt_put(o, "%.*s", fbt_strnlen(e->mnemonic, sizeof(e->mnemonic)), e->mnemonic);
		break;
	case FBT_COL_HANDLING:
		fbt_put(o, "%s", FBT_NAME(fbt_handling_names, e->handling));
		break;
	default:
		fbt_put_fixups(o, e->fixups);
		break;
	}
}

static unsigned long fbt_cell_len(const struct fbt_emu_table *t, unsigned int i, int col)
{
	struct fbt_out o = { (char *)0, 0, 0 };

	fbt_put_cell(&o, t, i, col);
	return o.len;
}

static void fbt_pad(struct fbt_out *o, unsigned long n)
{
	while (n--)
		fbt_put(o, " ");
}

unsigned long fbt_format_table(const struct fbt_emu_table *t, const char *source,
			       const char *sha256, char *buf, unsigned long size)
{
	const struct fbt_emu_header *h = &t->hdr;
	struct fbt_out o = { buf, size, 0 };
	unsigned long w[FBT_NCOL], start;
	unsigned int i;
	int c;

	if (size)
		buf[0] = '\0';
	/* The header: keys left-aligned to "default handling:", as _header() has them. */
	fbt_put(&o, "%-17s %.*s\n", "table:", fbt_strnlen(h->name, sizeof(h->name)), h->name);
	fbt_put(&o, "%-17s %s\n", "source:", source);
	fbt_put(&o, "%-17s %s\n", "sha256:", sha256);
	fbt_put(&o, "%-17s version %u, header %u bytes, %u entries of %u bytes\n", "abi:",
		h->abi_version, h->header_size, h->count, h->entry_size);
	if (h->default_handling == FBT_H_NONE)
		fbt_put(&o, "%-17s none (refuse what is not listed)\n", "default handling:");
	else
		fbt_put(&o, "%-17s %s\n", "default handling:",
			FBT_NAME(fbt_handling_names, h->default_handling));
	fbt_put(&o, "%-17s %s\n", "step mechanism:", h->step_mechanism == FBT_STEP_TF ?
		"tf (single-step trap after one instruction)" :
		"int3 (out of line, then a trailing int3)");
	fbt_put(&o, "%-17s %s\n", "IF policy:", h->step_if == FBT_IF_MASKED ?
		"masked (IF cleared while the copy runs)" :
		"preserved (IF as the interrupted context had it)");
	fbt_put(&o, "%-17s %s\n", "emulation flags:", h->emu_flags == FBT_EMU_SAVED ?
		"saved (the interrupted context's pt_regs->flags)" :
		"live (the handler's own flags)");
	fbt_put(&o, "%-17s %s\n", "fault fixup:", h->fault_fixup ?
		"yes (faults in a step are fixed up at the original IP)" : "no");
	fbt_put(&o, "%-17s ", "step fixups:");
	fbt_put_fixups(&o, h->step_fixups);
	fbt_put(&o, "\n");
	if (h->patch_len > 1)
		fbt_put(&o, "%-17s %u bytes (FBT115 under --deep: no branch may land inside)\n",
			"patch window:", h->patch_len);
	fbt_put(&o, "\n");

	/* Rows: "#" right-aligned, the rest left-aligned, two spaces apart, no trailing blanks. */
	for (c = 0; c < FBT_NCOL; c++) {
		w[c] = 0;
		while (fbt_columns[c][w[c]])
			w[c]++;
		for (i = 0; i < h->count; i++) {
			unsigned long n = fbt_cell_len(t, i, c);

			if (n > w[c])
				w[c] = n;
		}
	}
	fbt_pad(&o, w[0] - 1);
	for (c = 0; c < FBT_NCOL; c++) {
		start = o.len;
		fbt_put(&o, "%s%s", c ? "  " : "", fbt_columns[c]);
		if (c && c < FBT_NCOL - 1)
			fbt_pad(&o, w[c] - (o.len - start - 2));
	}
	fbt_put(&o, "\n");
	for (i = 0; i < h->count; i++) {
		fbt_pad(&o, w[0] - fbt_cell_len(t, i, FBT_COL_INDEX));
		for (c = 0; c < FBT_NCOL; c++) {
			if (c)
				fbt_put(&o, "  ");
			start = o.len;
			fbt_put_cell(&o, t, i, c);
			if (c && c < FBT_NCOL - 1)
				fbt_pad(&o, w[c] - (o.len - start));
		}
		fbt_put(&o, "\n");
	}
	if (!h->count)
		fbt_put(&o, "(no entries)\n");
	return o.len;
}

// SPDX-License-Identifier: GPL-2.0
/*
 * fbt_shim.c: ctypes-friendly wrappers around the engine (kmod/fbt_engine.c), for tests only.
 *
 * Each call takes raw instruction bytes and a table blob (the .fbt_emu_table section bytes),
 * decodes, and calls the engine the way the module's int3 path does (kmod/fbt_probe.c).
 */
#include "fbt_engine.h"
#include "fbt_listing.h"

struct shim_decoded {
	int len, modrm_off, disp_off, disp_len, imm_off, imm_len, map, op, rex, vex;
	int nprefix, opcode_len;
	unsigned char prefix[16];
	unsigned char opcode[4];
};

int shim_decode(const unsigned char *b, unsigned int n, struct shim_decoded *d)
{
	struct fbt_insn in;
	int i, r = fbt_decode(&in, b, n);

	if (r < 0)
		return r;
	d->len = in.len;
	d->modrm_off = in.modrm_off;
	d->disp_off = in.disp_off;
	d->disp_len = in.disp_len;
	d->imm_off = in.imm_off;
	d->imm_len = in.imm_len;
	d->map = in.map;
	d->op = in.op;
	d->rex = in.rex;
	d->vex = in.vex;
	d->nprefix = in.nprefix;
	d->opcode_len = in.opcode_len;
	for (i = 0; i < in.nprefix && i < 16; i++)
		d->prefix[i] = in.prefix[i];
	for (i = 0; i < 3; i++)
		d->opcode[i] = in.opcode[i];
	return r;
}

int shim_table_check(const void *table, unsigned long size)
{
	return fbt_table_check(table, size);
}

/* Entry index (or -1: no entry), with *handling and *fixups as the module takes them. */
int shim_lookup(const void *table, const unsigned char *b, unsigned int n, int tclass,
		int *handling, unsigned int *fixups)
{
	const struct fbt_emu_table *t = table;
	const struct fbt_emu_entry *e;
	struct fbt_insn in;
	int r = fbt_decode(&in, b, n);

	if (r < 0)
		return -100 + r;
	in.target_class = tclass;
	*handling = fbt_effective(t, &in, &e, fixups);
	return e ? (int)(e - t->entries) : -1;
}

int shim_emulate(const void *table, const unsigned char *b, unsigned int n, int tclass,
		 struct fbt_regs *regs, __u64 *live)
{
	const struct fbt_emu_table *t = table;
	struct fbt_insn in;
	int r = fbt_decode(&in, b, n);

	if (r < 0)
		return r;
	in.target_class = tclass;
	return fbt_emulate(&in, &t->hdr, regs, live);
}

unsigned int shim_step_size(void)
{
	return sizeof(struct fbt_step_state);
}

/* Prepare a step with the given fixups; copies the copy's bytes out. */
int shim_step_prepare(const void *table, const unsigned char *b, unsigned int n, unsigned int fixups,
		      __u64 orig, __u64 slot, struct fbt_step_state *st, unsigned char *copy,
		      int *copy_len)
{
	const struct fbt_emu_table *t = table;
	struct fbt_insn in;
	int i, r = fbt_decode(&in, b, n);

	if (r < 0)
		return r;
	r = fbt_step_prepare(st, &in, &t->hdr, fixups, orig, slot);
	if (r < 0)
		return r;
	for (i = 0; i < st->copy_len; i++)
		copy[i] = st->copy[i];
	*copy_len = st->copy_len;
	return 0;
}

void shim_step_begin(struct fbt_step_state *st, struct fbt_regs *regs)
{
	fbt_step_begin(st, regs);
}

int shim_step_end(struct fbt_step_state *st, struct fbt_regs *regs)
{
	return fbt_step_end(st, regs);
}

unsigned long shim_format(const void *table, const char *source, const char *sha256, char *buf,
			  unsigned long size)
{
	return fbt_format_table(table, source, sha256, buf, size);
}

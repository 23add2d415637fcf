/* SPDX-License-Identifier: GPL-2.0 */
/*
 * fbt_probe.h: FBT probes and the int3 path that handles them from the compiled-in table.
 */
#ifndef FBT_PROBE_H
#define FBT_PROBE_H

#include <linux/types.h>

#include "fbt_engine.h"

extern const struct fbt_emu_table fbt_emu_table;

/* How a probe is armed (struct fbt_probe.armed). */
enum fbt_armed {
	FBT_ARMED_NONE		= 0,
	FBT_ARMED_INT3		= 1,	/* int3 written over the first byte by text_poke */
	FBT_ARMED_FTRACE	= 2,	/* the function's ftrace site, through an ftrace_ops */
};

/* One probe: the displaced instruction, how the table handles it, and its prepared copy. */
struct fbt_probe {
	unsigned long			addr;		/* the patchpoint */
	struct fbt_insn			insn;		/* the instruction the int3 displaces */
	const struct fbt_emu_entry	*entry;		/* the first entry that matched, or NULL */
	u32				fixups;		/* effective fixups (entry + header) */
	u32				active_fx;	/* the fixups that act on this instruction */
	u8				handling;	/* enum fbt_handling */
	u8				armed;		/* enum fbt_armed */
	u8				saved;		/* the byte the int3 replaced */
	struct fbt_step_state		step;		/* FBT_H_STEP: the out-of-line copy */
	atomic_long_t			hits;
};

unsigned long fbt_table_size(void);
int fbt_probe_prepare(struct fbt_probe *p, unsigned long addr, const u8 *bytes,
		      unsigned int len, unsigned long slot);
void fbt_probes_publish(struct fbt_probe *sorted, unsigned int n);
struct fbt_probe *fbt_probe_find(struct fbt_probe *sorted, unsigned int n, unsigned long addr);
int fbt_int3_init(void);
void fbt_int3_exit(void);

#endif /* FBT_PROBE_H */

/* SPDX-License-Identifier: GPL-2.0 */
/*
 * fbt_probe.h: FBT probes and the int3 path that handles them from the compiled-in table.
 */
#ifndef FBT_PROBE_H
#define FBT_PROBE_H

#include <linux/types.h>

#include "fbt_engine.h"

extern const struct fbt_emu_table fbt_emu_table;

/* One probe: the displaced instruction, how the table handles it, and its prepared copy. */
struct fbt_probe {
	unsigned long			addr;		/* the patchpoint */
	struct fbt_insn			insn;		/* the instruction the int3 displaces */
	const struct fbt_emu_entry	*entry;		/* the first entry that matched, or NULL */
	u32				fixups;		/* effective fixups (entry + header) */
	u8				handling;	/* enum fbt_handling */
	struct fbt_step_state		step;		/* FBT_H_STEP: the out-of-line copy */
	atomic_long_t			hits;
};

unsigned long fbt_table_size(void);
int fbt_probe_prepare(struct fbt_probe *p, unsigned long addr, const u8 *bytes,
		      unsigned int len, unsigned long slot);
int fbt_probe_publish(struct fbt_probe *p);
int fbt_int3_init(void);
void fbt_int3_exit(void);

#endif /* FBT_PROBE_H */

/* SPDX-License-Identifier: GPL-2.0 */
/*
 * fbt_slots.S: executable slots for out-of-line copies: page-aligned int3 bytes in the module's text.
 *
 * The module loader maps every SHF_EXECINSTR section read-only and executable; fbt_arm.c writes
 * each stepped probe's copy into its FBT_SLOT_SIZE slot with text_poke(), as kprobes writes its
 * instruction slots. Unused bytes stay int3, so a copy that runs past its end traps.
 */
#include "fbt_slots.h"

	.pushsection .text.fbt_slots, "ax", @progbits
	.balign 4096
	.globl fbt_slots
fbt_slots:
	.fill FBT_NR_SLOTS * FBT_SLOT_SIZE, 1, 0xcc
	.popsection

/* SPDX-License-Identifier: GPL-2.0 */
/*
 * fbt_slots.h: the size of the executable slot area (fbt_slots.S) that holds out-of-line copies.
 */
#ifndef FBT_SLOTS_H
#define FBT_SLOTS_H

#define FBT_SLOT_SIZE	32	/* >= FBT_COPY_MAX (fbt_engine.h) */
#define FBT_NR_SLOTS	8192	/* 256 KiB: every stepped int3 probe of a 6.1 vmlinux fits */

#ifndef __ASSEMBLY__
extern unsigned char fbt_slots[];
#endif

#endif /* FBT_SLOTS_H */

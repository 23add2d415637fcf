/* SPDX-License-Identifier: GPL-2.0 */
/*
 * fbt_table.h: the ABI of the FBT emulation table, shared by the trap handler and fbt-audit.
 *
 * The table lives in its own ELF section, FBT_EMU_SECTION: one header followed by
 * `count` fixed-size entries. It holds no pointers, so module relocations never touch
 * it and the auditor can read it back byte for byte from any object that carries it.
 * The Python mirror is audit/model/abi.py; tests/test_table.py checks sizeof/offsetof.
 */
#ifndef FBT_TABLE_H
#define FBT_TABLE_H

#ifdef __KERNEL__
#include <linux/types.h>
#else
#include <stdint.h>
typedef uint8_t __u8;
typedef uint16_t __u16;
typedef uint32_t __u32;
#endif

#define FBT_EMU_SECTION		".fbt_emu_table"
#define FBT_EMU_MAGIC		"FBTEMUTB"	/* 8 bytes, no NUL */
#define FBT_EMU_ABI_VERSION	1

/* How the trap handler deals with the displaced instruction. */
enum fbt_handling {
	FBT_H_NONE	= 0,	/* header default only: no default, refuse what is not listed */
	FBT_H_EMULATE	= 1,	/* emulated on the saved pt_regs, never executed */
	FBT_H_STEP	= 2,	/* executed out of line, then fixed up */
	FBT_H_REFUSE	= 3,	/* no probe is placed */
	FBT_H_MOVE	= 4,	/* the patchpoint moves past this instruction (ENDBR) */
	FBT_H_FTRACE	= 5,	/* the site is probed through ftrace, not int3 */
};

/* How an instruction is stepped. */
enum fbt_step {
	FBT_STEP_TF	= 1,	/* copy to a buffer, set TF, take #DB after one instruction */
	FBT_STEP_INT3	= 2,	/* copy to a buffer followed by int3 (kprobes' out-of-line step) */
};

/* What happens to IF while the copy runs. */
enum fbt_step_if {
	FBT_IF_MASKED		= 1,	/* IF cleared in the flags the copy runs with */
	FBT_IF_PRESERVED	= 2,	/* IF left as the interrupted context had it */
};

/* Which flags emulation reads and writes. */
enum fbt_emu_flags {
	FBT_EMU_SAVED	= 1,	/* the interrupted context's pt_regs->flags */
	FBT_EMU_LIVE	= 2,	/* the handler's own flags (IF masked, TF maybe set) */
};

/* Well-known targets of direct calls and jumps. */
enum fbt_target {
	FBT_T_ANY		= 0,
	FBT_T_FENTRY		= 1,	/* __fentry__: an ftrace site */
	FBT_T_RETURN_THUNK	= 2,	/* __x86_return_thunk */
	FBT_T_INDIRECT_THUNK	= 3,	/* __x86_indirect_thunk_* */
};

/* Fixups applied after a step (bitmask). */
#define FBT_FX_PUSHED_FLAGS	0x01	/* rewrite the flags PUSHF pushed with the saved flags */
#define FBT_FX_LIVE_IF		0x02	/* restore IF in pt_regs from the interrupted context */
#define FBT_FX_RIP_DISP		0x04	/* RIP-relative displacement rebased for the copy */
#define FBT_FX_BRANCH_TARGET	0x08	/* relative branch target recomputed from the original IP */
#define FBT_FX_RETURN_ADDR	0x10	/* pushed return address rewritten to the original IP */
#define FBT_FX_REP_CONT		0x20	/* REP string op continued until RCX is exhausted */
#define FBT_FX_TRANSFER_IP	0x40	/* the IP the instruction set is kept (ret, jmp *) */

/* Entry match flags. */
#define FBT_M_EXACT_PREFIX	0x01	/* no legacy prefix beyond those in prefix[] */
#define FBT_M_OWN_FIXUPS	0x02	/* a step applies only fixups[], not the header's step_fixups */

struct fbt_emu_header {			/* 64 bytes */
	char	magic[8];		/* FBT_EMU_MAGIC */
	__u16	abi_version;		/* FBT_EMU_ABI_VERSION */
	__u16	header_size;		/* sizeof(struct fbt_emu_header) */
	__u16	entry_size;		/* sizeof(struct fbt_emu_entry) */
	__u16	count;			/* entries that follow */
	__u8	default_handling;	/* enum fbt_handling for unmatched instructions */
	__u8	step_mechanism;		/* enum fbt_step */
	__u8	step_if;		/* enum fbt_step_if */
	__u8	emu_flags;		/* enum fbt_emu_flags */
	__u8	fault_fixup;		/* 1: faults during a step are fixed up at the original IP */
	__u8	patch_len;		/* bytes the probe writes at the patchpoint: 0 or 1 = the int3
					 * alone; 5 = a jmp rel32 (an optprobe), so no branch may land
					 * strictly inside [patchpoint, patchpoint + patch_len) */
	__u8	reserved0[2];
	__u32	step_fixups;		/* FBT_FX_* applied to every step */
	__u32	reserved1;
	char	name[32];		/* NUL-padded table name */
};

struct fbt_emu_entry {			/* 32 bytes; first match wins */
	__u8	prefix[3];		/* legacy prefixes that must be present (0 = unused) */
	__u8	rex_mask;		/* (REX byte or 0) & rex_mask == rex_value */
	__u8	rex_value;
	__u8	opcode[3];		/* opcode bytes, escapes included */
	__u8	opcode_len;		/* 1..3 */
	__u8	opcode_mask;		/* applied to the last opcode byte (0xff: exact) */
	__u8	modrm_mask;		/* 0: ModRM not examined */
	__u8	modrm_value;
	__u8	target;			/* enum fbt_target; FBT_T_ANY matches any */
	__u8	handling;		/* enum fbt_handling */
	__u8	match_flags;		/* FBT_M_* */
	__u8	reserved;
	__u32	fixups;			/* FBT_FX_* for this entry */
	char	mnemonic[12];		/* NUL-padded */
};

struct fbt_emu_table {
	struct fbt_emu_header	hdr;
	struct fbt_emu_entry	entries[];
};

#endif /* FBT_TABLE_H */

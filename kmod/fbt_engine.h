/* SPDX-License-Identifier: GPL-2.0 */
/*
 * fbt_engine.h: the FBT emulation engine: decode, table lookup, emulation and out-of-line steps.
 *
 * Plain C with no kernel-only calls: the same source builds into fbt.ko and into a userspace
 * shared library that tests/test_kmod_engine.py runs against the CPU. The engine never sees
 * struct pt_regs; the module copies pt_regs into struct fbt_regs and back (fbt_probe.c).
 *
 * Memory: the engine reads and writes the interrupted context's stack (and, for a step, the
 * memory a copy touched) through plain pointers. In the kernel that is the interrupted kernel
 * stack, which the int3 entry leaves a gap below for exactly this (arch/x86/entry/entry_64.S,
 * idtentry: "create a 6-word gap to allow the int3 handler to emulate a call instruction").
 */
#ifndef FBT_ENGINE_H
#define FBT_ENGINE_H

#include "fbt_table.h"

#ifndef __KERNEL__
/* Same base types as <linux/types.h>, so a file that includes both still compiles. */
typedef signed char __s8;
typedef short __s16;
typedef int __s32;
typedef long long __s64;
typedef unsigned long long __u64;
#endif

#define FBT_MAX_INSN		15	/* longest x86 instruction */
#define FBT_COPY_MAX		24	/* an out-of-line copy: instruction and up to two int3 */

/* General-purpose registers in ModRM/REX numbering. */
enum fbt_gpr {
	FBT_RAX, FBT_RCX, FBT_RDX, FBT_RBX, FBT_RSP, FBT_RBP, FBT_RSI, FBT_RDI,
	FBT_R8, FBT_R9, FBT_R10, FBT_R11, FBT_R12, FBT_R13, FBT_R14, FBT_R15,
	FBT_NR_GPR,
};

/* RFLAGS bits (Intel SDM Vol. 1, 3.4.3). */
#define FBT_FL_CF	0x000001ULL
#define FBT_FL_FIXED	0x000002ULL	/* reserved, always 1 */
#define FBT_FL_PF	0x000004ULL
#define FBT_FL_AF	0x000010ULL
#define FBT_FL_ZF	0x000040ULL
#define FBT_FL_SF	0x000080ULL
#define FBT_FL_TF	0x000100ULL
#define FBT_FL_IF	0x000200ULL
#define FBT_FL_DF	0x000400ULL
#define FBT_FL_OF	0x000800ULL
#define FBT_FL_IOPL	0x003000ULL
#define FBT_FL_NT	0x004000ULL
#define FBT_FL_RF	0x010000ULL
#define FBT_FL_VM	0x020000ULL
#define FBT_FL_AC	0x040000ULL
#define FBT_FL_VIF	0x080000ULL
#define FBT_FL_VIP	0x100000ULL
#define FBT_FL_ID	0x200000ULL

/* The register state the engine works on: a copy of what pt_regs holds. */
struct fbt_regs {
	__u64	gpr[FBT_NR_GPR];
	__u64	ip;		/* the instruction's address (not past the int3) */
	__u64	flags;
	__u64	cs;		/* CPL = cs & 3; a far return must come back to this selector */
};

/* Legacy prefixes, as a set (struct fbt_insn.pfx). */
#define FBT_P_66	0x0001	/* operand size */
#define FBT_P_67	0x0002	/* address size */
#define FBT_P_F0	0x0004	/* lock */
#define FBT_P_F2	0x0008	/* repne, bnd */
#define FBT_P_F3	0x0010	/* rep */
#define FBT_P_SEG	0x0020	/* 26 2e 36 3e: ignored in 64-bit mode */
#define FBT_P_FS	0x0040	/* 64 */
#define FBT_P_GS	0x0080	/* 65 */

/*
 * A decoded instruction. opcode[]/prefix[]/rex/modrm_off follow fbt-audit's model
 * (audit/decode/insn.py) so that table matching agrees byte for byte: the legacy prefixes before
 * the REX byte, then the opcode with its 0f / 0f 38 / 0f 3a escapes; for VEX and EVEX the
 * opcode is the lead byte (c4, c5, 62). map/op are the real opcode map and byte.
 */
struct fbt_insn {
	__u8	bytes[FBT_MAX_INSN];
	__u8	len;
	__u8	nprefix;
	__u8	prefix[FBT_MAX_INSN];
	__u8	rex;		/* REX byte, or 0 */
	__u8	opcode[3];
	__u8	opcode_len;
	__u8	map;		/* 0: one byte, 1: 0f, 2: 0f 38, 3: 0f 3a (VEX/EVEX: their map) */
	__u8	op;		/* the opcode byte within map */
	__u8	vex;		/* 0, or the VEX/EVEX lead byte */
	__s8	modrm_off;	/* -1: no ModRM */
	__s8	disp_off;	/* -1: no displacement */
	__u8	disp_len;
	__s8	imm_off;	/* -1: no immediate (or relative offset) */
	__u8	imm_len;
	__u8	target_class;	/* enum fbt_target of a direct call/jmp, set by the caller */
	__u16	pfx;		/* FBT_P_* */
};

/* Errors, returned negated. */
#define FBT_EBADINSN	1	/* the bytes do not decode (or are invalid in 64-bit mode) */
#define FBT_ENOTSUPP	2	/* the engine does not handle this instruction this way */
#define FBT_ERANGE	3	/* a rebased displacement does not fit in 32 bits */
#define FBT_EESCAPED	4	/* a step stopped somewhere its copy does not lead */

/* fbt_step_end() results. */
#define FBT_STEP_DONE	0	/* fixups applied, regs->ip is back in the original code */
#define FBT_STEP_AGAIN	1	/* REP continuation: run the copy again (regs already set) */

/* How a step's copy was built. */
enum fbt_step_kind {
	FBT_SK_PLAIN	= 0,	/* the instruction as is (displacement maybe rebased) */
	FBT_SK_RELBR	= 1,	/* a relative branch whose target is recomputed (BRANCH_TARGET) */
	FBT_SK_INDIRECT	= 2,	/* ff /2, ff /4 whose target is kept (TRANSFER_IP) */
};

/* One out-of-line step: built by fbt_step_prepare(), run by fbt_step_begin()/_end(). */
struct fbt_step_state {
	__u64	orig_ip;	/* where the instruction lives */
	__u64	slot_ip;	/* where its copy runs */
	__u64	saved_flags;	/* the interrupted context's flags, taken by fbt_step_begin() */
	__u64	below_sp;	/* FBT_SK_INDIRECT: the stack word the ff /6 copy overwrites */
	__u32	fixups;		/* FBT_FX_* */
	__s32	rel;		/* FBT_SK_RELBR: the branch displacement */
	__u8	mechanism;	/* enum fbt_step */
	__u8	step_if;	/* enum fbt_step_if */
	__u8	len;		/* length of the original instruction */
	__u8	copy_len;
	__u8	kind;		/* enum fbt_step_kind */
	__u8	is_call;	/* e8, ff /2: pushes a return address */
	__u8	is_pushf;
	__u8	is_rep;		/* a REP string instruction */
	__u8	copy[FBT_COPY_MAX];
};

int fbt_decode(struct fbt_insn *insn, const void *buf, unsigned int avail);
int fbt_table_check(const struct fbt_emu_table *t, unsigned long size);
const struct fbt_emu_entry *fbt_lookup(const struct fbt_emu_table *t, const struct fbt_insn *insn);
int fbt_effective(const struct fbt_emu_table *t, const struct fbt_insn *insn,
		  const struct fbt_emu_entry **entry, __u32 *fixups);
int fbt_emulate(const struct fbt_insn *insn, const struct fbt_emu_header *hdr,
		struct fbt_regs *regs, __u64 *live_flags);
int fbt_step_prepare(struct fbt_step_state *st, const struct fbt_insn *insn,
		     const struct fbt_emu_header *hdr, __u32 fixups,
		     __u64 orig_ip, __u64 slot_ip);
void fbt_step_begin(struct fbt_step_state *st, struct fbt_regs *regs);
int fbt_step_end(struct fbt_step_state *st, struct fbt_regs *regs);

#endif /* FBT_ENGINE_H */

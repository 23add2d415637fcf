/* SPDX-License-Identifier: GPL-2.0 */
/*
 * fbt_table_def.h: macros that define an emulation table (kmod/tables/<name>.c) concisely.
 *
 * A table file includes this header and makes exactly one FBT_EMU_TABLE() call:
 *
 *	FBT_EMU_TABLE(fbt_emu_table,
 *		FBT_HEADER("reference", FBT_H_STEP, FBT_STEP_INT3, FBT_IF_MASKED,
 *			   FBT_EMU_SAVED, 1, FBT_FX_LIVE_IF | FBT_FX_RIP_DISP),
 *		FBT_OP1(0x9c, FBT_H_EMULATE, FBT_FX_NONE, "pushf"),
 *		FBT_ENTRY(FBT_H_REFUSE, FBT_FX_NONE, "call *mem",
 *			  FBT_OPC1(0xff), FBT_GRP(2)),
 *	);
 *
 * The object is a struct fbt_emu_table (header, then a flexible array of entries that
 * GCC and clang let a static initialiser fill), placed alone in FBT_EMU_SECTION, so the
 * section is exactly header + count * entry bytes. count is computed from the entries.
 * Every table file uses the one symbol name fbt_emu_table: the module links exactly one
 * table, and scripts/build-tables compiles each file on its own.
 *
 * Entries are matched in order and the first match wins (DESIGN.md "Matching"), so list
 * specific entries before general ones. Builds in userspace (gcc -c -O2 -I kmod) and in
 * a kernel module build; only designated initialisers, so no field is set twice.
 */
#ifndef FBT_TABLE_DEF_H
#define FBT_TABLE_DEF_H

#include "fbt_table.h"

#define FBT_FX_NONE		0

/* The eight magic bytes without a terminating NUL (a string would need nine). */
#define FBT_EMU_MAGIC_INIT	{ 'F', 'B', 'T', 'E', 'M', 'U', 'T', 'B' }

/* 0, or a compile error "size of array is negative" when the mnemonic has 12+ characters. */
#define FBT_MNEMONIC_FITS(m)	(0 * sizeof(char[1 - 2 * (sizeof("" m "") > 12)]))

/* Opcode bytes. The M forms mask the last byte: FBT_OPC1M(0x70, 0xf0) is 70..7f. */
#define FBT_OPC1M(a, m)		.opcode = { (a) }, .opcode_len = 1, .opcode_mask = (m)
#define FBT_OPC2M(a, b, m)	.opcode = { (a), (b) }, .opcode_len = 2, .opcode_mask = (m)
#define FBT_OPC3M(a, b, c, m)	.opcode = { (a), (b), (c) }, .opcode_len = 3, .opcode_mask = (m)
#define FBT_OPC1(a)		FBT_OPC1M(a, 0xff)
#define FBT_OPC2(a, b)		FBT_OPC2M(a, b, 0xff)
#define FBT_OPC3(a, b, c)	FBT_OPC3M(a, b, c, 0xff)

/* Wildcards: any opcode of a map, e.g. with FBT_MODRM(0xc7, 0x05) for "any RIP-relative". */
#define FBT_ANY_OPC1		FBT_OPC1M(0x00, 0x00)			/* xx */
#define FBT_ANY_OPC2		FBT_OPC2M(0x0f, 0x00, 0x00)		/* 0f xx */
#define FBT_ANY_OPC3(esc)	FBT_OPC3M(0x0f, (esc), 0x00, 0x00)	/* 0f 38 xx, 0f 3a xx */

/* ModRM: (modrm & m) == v. An instruction without ModRM never matches a ModRM constraint. */
#define FBT_MODRM(m, v)		.modrm_mask = (m), .modrm_value = (v)
#define FBT_GRP(r)		FBT_MODRM(0x38, (r) << 3)		/* /r, any mod */
#define FBT_GRP_REG(r)		FBT_MODRM(0xf8, 0xc0 | ((r) << 3))	/* /r, mod=11 (register) */
#define FBT_RIP_REL		FBT_MODRM(0xc7, 0x05)			/* disp32(%rip) */

/* Prefixes that must be present (up to three), the REX byte, the target class, match flags. */
#define FBT_PFX(...)		.prefix = { __VA_ARGS__ }
#define FBT_REX(m, v)		.rex_mask = (m), .rex_value = (v)
#define FBT_NO_REX		FBT_REX(0xff, 0x00)
#define FBT_TO(t)		.target = (t)
#define FBT_MFLAGS(f)		.match_flags = (f)

/* An entry: handling, fixups, mnemonic (at most 11 characters), then the match fields. */
#define FBT_ENTRY(h, fx, mnem, ...)						\
	{									\
		__VA_ARGS__,							\
		.handling = (h),						\
		.fixups = (fx),							\
		.mnemonic = mnem,						\
		.reserved = FBT_MNEMONIC_FITS(mnem),				\
	}

/* Shorthands for the common shapes. */
#define FBT_OP1(a, h, fx, mnem)		FBT_ENTRY(h, fx, mnem, FBT_OPC1(a))
#define FBT_OP1M(a, m, h, fx, mnem)	FBT_ENTRY(h, fx, mnem, FBT_OPC1M(a, m))
#define FBT_OP2(a, b, h, fx, mnem)	FBT_ENTRY(h, fx, mnem, FBT_OPC2(a, b))
#define FBT_OP2M(a, b, m, h, fx, mnem)	FBT_ENTRY(h, fx, mnem, FBT_OPC2M(a, b, m))
#define FBT_OP1_MODRM(a, mm, mv, h, fx, mnem)					\
	FBT_ENTRY(h, fx, mnem, FBT_OPC1(a), FBT_MODRM(mm, mv))
#define FBT_OP2_MODRM(a, b, mm, mv, h, fx, mnem)				\
	FBT_ENTRY(h, fx, mnem, FBT_OPC2(a, b), FBT_MODRM(mm, mv))

/*
 * The header fields a table chooses: name (at most 31 characters), default handling,
 * step mechanism, IF policy during a step, flags emulation works on, whether faults in
 * a step are fixed up at the original IP (0/1), and the fixups applied to every step.
 */
#define FBT_HEADER(nm, dflt, mech, ifpol, emu, fault, stepfx)			\
	.name = nm,								\
	.default_handling = (dflt),						\
	.step_mechanism = (mech),						\
	.step_if = (ifpol),							\
	.emu_flags = (emu),							\
	.fault_fixup = (fault),							\
	.step_fixups = (stepfx),						\
	.reserved1 = 0 * sizeof(char[1 - 2 * (sizeof("" nm "") > 32)])

/* FBT_HEADER with a patch longer than the int3: plen bytes written at the patchpoint (5: jmp rel32). */
#define FBT_HEADER_PATCH(nm, dflt, mech, ifpol, emu, fault, stepfx, plen)	\
	FBT_HEADER(nm, dflt, mech, ifpol, emu, fault, stepfx),			\
	.patch_len = (plen)

#define FBT_EMU_COUNT(...)							\
	(sizeof((const struct fbt_emu_entry[]){ __VA_ARGS__ }) /		\
	 sizeof(struct fbt_emu_entry))

/* The table object: one per translation unit, alone in its section. */
#define FBT_EMU_TABLE(ident, header_, ...)					\
	extern const struct fbt_emu_table ident;				\
	const struct fbt_emu_table ident					\
	__attribute__((used, section(FBT_EMU_SECTION), aligned(8))) = {		\
		.hdr = {							\
			.magic = FBT_EMU_MAGIC_INIT,				\
			.abi_version = FBT_EMU_ABI_VERSION,			\
			.header_size = sizeof(struct fbt_emu_header),		\
			.entry_size = sizeof(struct fbt_emu_entry),		\
			.count = FBT_EMU_COUNT(__VA_ARGS__),			\
			header_,						\
		},								\
		.entries = { __VA_ARGS__ },					\
	}

#endif /* FBT_TABLE_DEF_H */

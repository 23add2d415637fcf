// SPDX-License-Identifier: GPL-2.0
/*
 * kprobes-6.12.c: Linux kprobes' instruction handling on x86-64 in v6.12 ("kprobes-6.12").
 *
 * Source: arch/x86/kernel/kprobes/core.c and arch/x86/include/asm/insn.h of v6.12 (read from the
 * 6.12.117 stable tree; see shared/reference/hazards.md §2). Only the *instruction* handling is
 * modelled; the address checks of check_kprobe_address_safe (blacklist, jump labels, static
 * calls, __bug_table, __cfi_/__pfx_ preambles) are site rules that apply whatever the table.
 *
 * Header: every instruction without an emulate_op is copied to an insn slot and run out of
 * line with a trailing int3 (prepare_singlestep), with IF cleared (setup_singlestep:
 * "regs->flags &= ~X86_EFLAGS_IF"); resume_singlestep ORs the saved IF back (LIVE_IF) and
 * moves the IP back from the slot. __copy_instruction rebases a disp32(%rip) (RIP_DISP). The
 * emulate_op helpers work on regs->flags, the saved frame (emu_flags SAVED). A fault in the
 * copy is fixed up at the original IP (kprobe_fault_handler). Boosting (running the copy
 * without the trailing int3) is off with CONFIG_PREEMPTION, which Debian's 6.12 sets.
 *
 * What 6.12 adds to 6.1: can_probe() refuses is_exception_insn() ("INT and UD are special
 * and should not be kprobed"): int3, int n, into, int1, ud0, ud1, ud2. The ud2 entry also
 * covers the Xen/KVM emulate prefix, which starts with ud2.
 *
 * The first matching entry wins. Entries are in the order the kernel applies its checks.
 */
#include "fbt_table_def.h"
#include "kprobes-common.h"

#define EMU	FBT_H_EMULATE
#define REFUSE	FBT_H_REFUSE
#define NOFX	FBT_FX_NONE

FBT_EMU_TABLE(fbt_emu_table,
	FBT_HEADER("kprobes-6.12", FBT_H_STEP, FBT_STEP_INT3, FBT_IF_MASKED,
		   FBT_EMU_SAVED, 1, FBT_FX_LIVE_IF | FBT_FX_RIP_DISP),

	KPROBES_SITE_ENTRIES

	/* can_probe -> is_exception_insn: "INT and UD are special and should not be kprobed". */
	FBT_OP1(0xcd, REFUSE, NOFX, "int n"),
	FBT_OP1(0xce, REFUSE, NOFX, "into"),		/* invalid in 64-bit mode */
	FBT_OP1(0xf1, REFUSE, NOFX, "int1"),
	FBT_OP2(0x0f, 0x0b, REFUSE, NOFX, "ud2"),	/* and the emulate prefix */
	FBT_OP2(0x0f, 0xb9, REFUSE, NOFX, "ud1"),
	FBT_OP2(0x0f, 0xff, REFUSE, NOFX, "ud0"),

	KPROBES_EMULATION_ENTRIES
);

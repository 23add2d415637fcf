// SPDX-License-Identifier: GPL-2.0
/*
 * kprobes-6.1-optprobe.c: kprobes-6.1 once a probe is optimized: a 5-byte jmp, not an int3 ("kprobes-6.1-optprobe").
 *
 * Source: arch/x86/kernel/kprobes/opt.c of v6.1 (shared/reference/hazards.md §2, "Optprobes").
 * An optimized kprobe replaces the int3 at the probed address with `jmp rel32` to a detour buffer
 * (RELATIVEJUMP_SIZE = JMP32_INSN_SIZE = 5), so the patch covers [paddr, paddr + 5): patch_len 5.
 * The instruction handling is kprobes-6.1's (a probe is an int3 kprobe until the optimizer runs,
 * and falls back to one whenever it refuses), so the entries are the same.
 *
 * can_optimize() refuses a function in which "any instructions jump into target": every direct
 * jmp, jcc, loop and jrcxz decoded from the function's start whose target is in
 * (paddr, paddr + 5) (insn_jump_into_range, from paddr + INT3_INSN_SIZE on), and any indirect
 * jump, which might come from a jump table. It decodes the probed function only: a branch from
 * another function, from its `.cold` part, a jump-label target still NOPed out or an exception
 * fixup into the window is not seen. FBT115 reports all of them, for a provider that writes the
 * 5-byte patch as this header says.
 */
#include "fbt_table_def.h"
#include "kprobes-common.h"

#define EMU	FBT_H_EMULATE
#define REFUSE	FBT_H_REFUSE
#define NOFX	FBT_FX_NONE

FBT_EMU_TABLE(fbt_emu_table,
	FBT_HEADER_PATCH("kprobes-6.1-optprobe", FBT_H_STEP, FBT_STEP_INT3, FBT_IF_MASKED,
			 FBT_EMU_SAVED, 1, FBT_FX_LIVE_IF | FBT_FX_RIP_DISP, 5),

	KPROBES_SITE_ENTRIES

	KPROBES_EMULATION_ENTRIES
);

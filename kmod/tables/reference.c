// SPDX-License-Identifier: GPL-2.0
/*
 * reference.c: the default emulation table ("reference"), the one kmod/ compiles in.
 *
 * It follows Linux kprobes on x86 (arch/x86/kernel/kprobes/core.c, 6.1 and 6.12; see
 * shared/reference/hazards.md §2): instructions that set IF, or whose meaning depends on
 * where they run, are emulated on the saved pt_regs; everything else runs out of line
 * with IF cleared and a trailing int3 (setup_singlestep/prepare_singlestep), after which
 * the saved IF is ORed back (resume_singlestep: LIVE_IF) and a RIP-relative disp32 has
 * been rebased in the copy (__copy_instruction: RIP_DISP). Faults during the step are
 * fixed up at the original IP, as kprobe_fault_handler does. What kprobes refuses, this
 * table refuses, so every instruction at a 6.1 or 6.12 entry is either safe or refused.
 * The first matching entry wins: specific entries come before general ones.
 */
#include "fbt_table_def.h"

#define EMU	FBT_H_EMULATE
#define REFUSE	FBT_H_REFUSE
#define STEP	FBT_H_STEP
#define NOFX	FBT_FX_NONE

FBT_EMU_TABLE(fbt_emu_table,
	FBT_HEADER("reference", FBT_H_STEP, FBT_STEP_INT3, FBT_IF_MASKED,
		   FBT_EMU_SAVED, 1, FBT_FX_LIVE_IF | FBT_FX_RIP_DISP),

	/*
	 * IBT landing pads: a probe must go after the ENDBR, never on it
	 * (arch_adjust_kprobe_addr, is_endbr in arch/x86/include/asm/ibt.h), and the
	 * seal's poison 66 0f 1f 00 counts as an ENDBR. fbt_audit's decoder keeps F3
	 * among the legacy prefixes; ModRM fa is endbr64, fb endbr32.
	 */
	FBT_ENTRY(FBT_H_MOVE, NOFX, "endbr64/32",
		  FBT_PFX(0xf3), FBT_OPC2(0x0f, 0x1e), FBT_MODRM(0xfe, 0xfa)),
	FBT_ENTRY(FBT_H_MOVE, NOFX, "endbr seal",
		  FBT_PFX(0x66), FBT_MFLAGS(FBT_M_EXACT_PREFIX), FBT_NO_REX,
		  FBT_OPC2(0x0f, 0x1f), FBT_MODRM(0xff, 0x00)),

	/* call __fentry__ is an ftrace site: probe it through ftrace (kprobes-on-ftrace). */
	FBT_ENTRY(FBT_H_FTRACE, NOFX, "call fentry",
		  FBT_OPC1(0xe8), FBT_TO(FBT_T_FENTRY)),

	/*
	 * IF modifiers "must be emulated since it will enable interrupt while int3
	 * single stepping" (prepare_emulation, kprobe_emulate_ifmodifiers): PUSHF
	 * pushes regs->flags, POPF pops into them, CLI/STI edit them.
	 */
	FBT_OP1(0x9c, EMU, NOFX, "pushf"),
	FBT_OP1(0x9d, EMU, NOFX, "popf"),
	FBT_OP1(0xfa, EMU, NOFX, "cli"),
	FBT_OP1(0xfb, EMU, NOFX, "sti"),

	/* Near transfers: kprobe_emulate_ret/_call/_jmp/_jcc/_loop. */
	FBT_OP1(0xc3, EMU, NOFX, "ret"),
	FBT_OP1(0xc2, EMU, NOFX, "ret imm16"),
	FBT_OP1(0xe8, EMU, NOFX, "call rel32"),
	FBT_OP1(0xe9, EMU, NOFX, "jmp rel32"),
	FBT_OP1(0xeb, EMU, NOFX, "jmp rel8"),
	FBT_OP1M(0x70, 0xf0, EMU, NOFX, "jcc rel8"),
	FBT_OP2M(0x0f, 0x80, 0xf0, EMU, NOFX, "jcc rel32"),
	FBT_OP1M(0xe0, 0xfc, EMU, NOFX, "loop/jrcxz"),

	/*
	 * ff /2 and ff /4: the register form is emulated, as kprobes does
	 * (kprobe_emulate_call_indirect/_jmp_indirect). kprobes refuses the memory
	 * form with -EOPNOTSUPP; this module steps it instead, keeping the IP the
	 * copy jumped to and rewriting the pushed return address, because 6.1 starts
	 * 76 paravirt functions with call *pv_ops+N(%rip). ff /3 and ff /5 are far
	 * transfers: refused.
	 */
	FBT_ENTRY(EMU, NOFX, "call *reg", FBT_OPC1(0xff), FBT_GRP_REG(2)),
	FBT_ENTRY(EMU, NOFX, "jmp *reg", FBT_OPC1(0xff), FBT_GRP_REG(4)),
	FBT_ENTRY(STEP, FBT_FX_RETURN_ADDR | FBT_FX_TRANSFER_IP, "call *mem", FBT_OPC1(0xff), FBT_GRP(2)),
	FBT_ENTRY(REFUSE, NOFX, "lcall *mem", FBT_OPC1(0xff), FBT_GRP(3)),
	FBT_ENTRY(STEP, FBT_FX_TRANSFER_IP, "jmp *mem", FBT_OPC1(0xff), FBT_GRP(4)),
	FBT_ENTRY(REFUSE, NOFX, "ljmp *mem", FBT_OPC1(0xff), FBT_GRP(5)),

	/* Far transfers and IRET (cf and 48 cf: any REX): -EOPNOTSUPP in prepare_emulation. */
	FBT_OP1(0xca, REFUSE, NOFX, "lret imm16"),
	FBT_OP1(0xcb, REFUSE, NOFX, "lret"),
	FBT_OP1(0xcf, REFUSE, NOFX, "iret"),
	FBT_OP1(0x9a, REFUSE, NOFX, "lcall ptr"),	/* invalid in 64-bit mode */
	FBT_OP1(0xea, REFUSE, NOFX, "ljmp ptr"),	/* invalid in 64-bit mode */

	/*
	 * Trap instructions: BUG/WARN, CFI and int3 handling key on the original IP
	 * (is_exception_insn in 6.12; the Xen/KVM emulate prefix starts with ud2).
	 */
	FBT_OP1(0xcc, REFUSE, NOFX, "int3"),
	FBT_OP1(0xcd, REFUSE, NOFX, "int n"),
	FBT_OP1(0xce, REFUSE, NOFX, "into"),		/* invalid in 64-bit mode */
	FBT_OP1(0xf1, REFUSE, NOFX, "int1"),
	FBT_OP2(0x0f, 0x0b, REFUSE, NOFX, "ud2"),
	FBT_OP2(0x0f, 0xb9, REFUSE, NOFX, "ud1"),
	FBT_OP2(0x0f, 0xff, REFUSE, NOFX, "ud0"),

	/* MOV to SS masks the trap after it (insn_masking_exception). */
	FBT_ENTRY(REFUSE, NOFX, "mov to ss", FBT_OPC1(0x8e), FBT_GRP(2)),

	/* Privileged or halting: unsafe to replay out of line. */
	FBT_OP1(0xf4, REFUSE, NOFX, "hlt"),
	FBT_OP2_MODRM(0x0f, 0x01, 0xff, 0xf8, REFUSE, NOFX, "swapgs"),
	FBT_OP2_MODRM(0x0f, 0x01, 0xff, 0xc8, REFUSE, NOFX, "monitor"),
	FBT_OP2_MODRM(0x0f, 0x01, 0xff, 0xc9, REFUSE, NOFX, "mwait"),
	FBT_OP2_MODRM(0x0f, 0x01, 0xff, 0xfa, REFUSE, NOFX, "monitorx"),
	FBT_OP2_MODRM(0x0f, 0x01, 0xff, 0xfb, REFUSE, NOFX, "mwaitx"),
	FBT_OP2_MODRM(0x0f, 0x01, 0xff, 0xc2, REFUSE, NOFX, "vmlaunch"),
	FBT_OP2_MODRM(0x0f, 0x01, 0xff, 0xc3, REFUSE, NOFX, "vmresume"),
	FBT_OP2_MODRM(0x0f, 0x01, 0xff, 0xd8, REFUSE, NOFX, "vmrun"),
	/* The rest of 0f 01 reg=0 mod=3 (vmcall, vmxoff, ...): kprobes refuses them all. */
	FBT_ENTRY(REFUSE, NOFX, "vmx 0f01/0", FBT_OPC2(0x0f, 0x01), FBT_GRP_REG(0)),
	FBT_OP2(0x0f, 0x07, REFUSE, NOFX, "sysret"),
	FBT_OP2(0x0f, 0x35, REFUSE, NOFX, "sysexit"),
	FBT_OP2(0x0f, 0x23, REFUSE, NOFX, "mov to dr"),
);

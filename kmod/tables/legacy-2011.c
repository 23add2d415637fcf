// SPDX-License-Identifier: GPL-2.0
/*
 * legacy-2011.c: dtrace4linux's FBT handling before its PUSHF fix ("legacy-2011"), for audits.
 *
 * Source: github.com/dtrace4linux/linux at fb01492 (dtrace-20111117 tarball import), the
 * parent of aa60b7f (dtrace-20111122, Changes #586 "When handling PUSHF instruction, dont
 * leave interrupts disabled"). cpu_adjust's IF restore before its opcode switch, and its
 * 9c case, read the same in every release from 2009 to c327c0b (2011-11-17).
 * Files cited below are at fb01492; see also shared/reference/hazards.md §1.
 *
 * Mechanism (driver/cpu_x86.c cpu_copy_instr): CLI/STI are emulated by editing IF in
 * regs->r_rfl, the saved frame (emu_flags SAVED). Anything else is copied to the per-CPU
 * ct_instr_buf, then "tp->ct_eflags = regs->r_rfl; regs->r_rfl |= X86_EFLAGS_TF;
 * regs->r_rfl &= ~X86_EFLAGS_IF" - a TF single-step with IF masked. cpu_fix_rel rebases
 * a disp32(%rip) in the copy (RIP_DISP). Nothing fixes up a fault at the original IP.
 *
 * After the #DB, cpu_adjust runs cpu_skip_prefix (drops 48, 26 2e 36 3e 64 65 66 67 9b
 * f0 f2 f3, then 40), and for every opcode but cf first does
 *	regs->r_rfl = (regs->r_rfl & ~(TF|IF)) | (tp->ct_eflags & IF);
 * so the live IF is restored on every step (LIVE_IF in the header), then switches on the
 * opcode (the entries below). Its "case 0xf2/0xf3" REP continuation is unreachable because
 * cpu_skip_prefix already removed F2/F3: REP string ops get one iteration (no REP_CONT).
 *
 * Default: step. The first matching entry wins, so the provider's refusals come first.
 */
#include "fbt_table_def.h"

#define STEP	FBT_H_STEP
#define REFUSE	FBT_H_REFUSE
#define NOFX	FBT_FX_NONE

FBT_EMU_TABLE(fbt_emu_table,
	FBT_HEADER("legacy-2011", FBT_H_STEP, FBT_STEP_TF, FBT_IF_MASKED,
		   FBT_EMU_SAVED, 0, FBT_FX_LIVE_IF | FBT_FX_RIP_DISP),

	/*
	 * driver/prov_common.c dtrace_parse_function (amd64): "am not happy with 0xe8
	 * CALLR instructions, so disable them for now"; 48 cf and cf: "We cannot single
	 * step an IRET for now"; f4: "if we single step a HLT, well, the kernel doesnt
	 * really like it". Only the exact forms cf and 48 cf are refused.
	 */
	FBT_OP1(0xe8, REFUSE, NOFX, "call rel32"),
	FBT_ENTRY(REFUSE, NOFX, "iret", FBT_OPC1(0xcf), FBT_NO_REX),
	FBT_ENTRY(REFUSE, NOFX, "iretq", FBT_OPC1(0xcf), FBT_REX(0xff, 0x48)),
	FBT_OP1(0xf4, REFUSE, NOFX, "hlt"),

	/*
	 * driver/fbt_linux.c fbt_prov_entry: "Avoid patching a patched probe point"
	 * (*instr == 0xcc), and "(instr[modrm] & 0xc7) == 0x05" for any opcode with a
	 * ModRM: "%RIP relative addressing modes potentially not being addressable in
	 * our single-step jump buffer". Any opcode = a zero mask on the last opcode byte,
	 * once per opcode map.
	 */
	FBT_OP1(0xcc, REFUSE, NOFX, "int3"),
	FBT_ENTRY(REFUSE, NOFX, "riprel", FBT_ANY_OPC1, FBT_RIP_REL),
	FBT_ENTRY(REFUSE, NOFX, "riprel 0f", FBT_ANY_OPC2, FBT_RIP_REL),
	FBT_ENTRY(REFUSE, NOFX, "riprel 0f38", FBT_ANY_OPC3(0x38), FBT_RIP_REL),
	FBT_ENTRY(REFUSE, NOFX, "riprel 0f3a", FBT_ANY_OPC3(0x3a), FBT_RIP_REL),

	/* cpu_copy_instr: "case 0xfa: // CLI regs->r_rfl &= ~X86_EFLAGS_IF", STI likewise. */
	FBT_OP1(0xfa, FBT_H_EMULATE, NOFX, "cli"),
	FBT_OP1(0xfb, FBT_H_EMULATE, NOFX, "sti"),

	/*
	 * PUSHF before aa60b7f (cpu_adjust): the IF-restore line above runs first (it
	 * skips only cf), so the live IF is restored and FBT103 does not apply; then
	 *	case 0x9c: { greg_t *fl = (greg_t *) regs->r_sp;
	 *		     *fl = regs->r_rfl; regs->r_pc = ct_orig_pc; break; }
	 * aa60b7f moved 9c ahead of the IF restore ("*fl = tp->ct_eflags; ... return
	 * FALSE"), which is what left the live IF masked afterwards. The pre-fix branch
	 * did not return early. No pushed-flags repair is credited here, as the brief's
	 * "PUSHF unrepaired" and the fix's own diagnosis have it (FBT102 fires); note that
	 * read literally, r_rfl already had TF cleared and IF restored when it was copied.
	 */
	FBT_OP1(0x9c, STEP, NOFX, "pushf"),
	/* No 9d case before #593: default path, whose IF restore undoes POPF's IF. */
	FBT_OP1(0x9d, STEP, NOFX, "popf"),

	/* "case 0x70 ... 0x7f", 0xeb, 0xe9, 0xe0-0xe3: target recomputed from ct_orig_pc. */
	FBT_OP1M(0x70, 0xf0, STEP, FBT_FX_BRANCH_TARGET, "jcc rel8"),
	FBT_OP1(0xeb, STEP, FBT_FX_BRANCH_TARGET, "jmp rel8"),
	FBT_OP1(0xe9, STEP, FBT_FX_BRANCH_TARGET, "jmp rel32"),
	FBT_OP1M(0xe0, 0xfc, STEP, FBT_FX_BRANCH_TARGET, "loop/jrcxz"),
	/* 0f 80-8f has no case: the default path resets RIP to the next instruction. */
	FBT_OP2M(0x0f, 0x80, 0xf0, STEP, NOFX, "jcc rel32"),

	/* "case 0xc2 ... 0xce": break, so the RIP the instruction set is kept. */
	FBT_OP1(0xc3, STEP, FBT_FX_TRANSFER_IP, "ret"),
	FBT_OP1(0xc2, STEP, FBT_FX_TRANSFER_IP, "ret imm16"),
	FBT_OP1(0xca, STEP, FBT_FX_TRANSFER_IP, "lret imm16"),
	FBT_OP1(0xcb, STEP, FBT_FX_TRANSFER_IP, "lret"),
	FBT_OP1(0xcd, STEP, FBT_FX_TRANSFER_IP, "int n"),
	FBT_OP1(0xce, STEP, FBT_FX_TRANSFER_IP, "into"),

	/*
	 * "case 0xff: switch (pc[1] & 0xf0)": 10 50 90 d0 (reg 2 or 3) rewrite the pushed
	 * return address with ct_orig_pc and keep RIP; 20 60 a0 e0 (reg 4 or 5) keep RIP;
	 * other ff forms take the default path.
	 */
	FBT_ENTRY(STEP, FBT_FX_RETURN_ADDR | FBT_FX_TRANSFER_IP, "call *",
		  FBT_OPC1(0xff), FBT_MODRM(0x30, 0x10)),
	FBT_ENTRY(STEP, FBT_FX_TRANSFER_IP, "jmp *",
		  FBT_OPC1(0xff), FBT_MODRM(0x30, 0x20)),
);

/* SPDX-License-Identifier: GPL-2.0 */
/*
 * kprobes-common.h: the entries kprobes-6.1.c and kprobes-6.12.c share, in the order the kernel
 * applies its checks: the address adjustments and __copy_instruction refusals, then
 * prepare_emulation. 6.12 inserts its is_exception_insn refusals between the two.
 */
#ifndef FBT_KPROBES_COMMON_H
#define FBT_KPROBES_COMMON_H

/* arch_adjust_kprobe_addr, check_ftrace_location and __copy_instruction. */
#define KPROBES_SITE_ENTRIES \
	/* \
	 * arch_adjust_kprobe_addr: a probe on sym+0 whose first u32 is_endbr() (ENDBR64, \
	 * ENDBR32, or the seal's poison 66 0f 1f 00) goes to sym+4 instead. \
	 */ \
	FBT_ENTRY(FBT_H_MOVE, NOFX, "endbr64/32", \
		  FBT_PFX(0xf3), FBT_OPC2(0x0f, 0x1e), FBT_MODRM(0xfe, 0xfa)), \
	FBT_ENTRY(FBT_H_MOVE, NOFX, "endbr seal", \
		  FBT_PFX(0x66), FBT_MFLAGS(FBT_M_EXACT_PREFIX), FBT_NO_REX, \
		  FBT_OPC2(0x0f, 0x1f), FBT_MODRM(0xff, 0x00)), \
\
	/* \
	 * check_kprobe_address_safe -> check_ftrace_location: a __fentry__ site becomes a \
	 * kprobe on ftrace (KPROBE_FLAG_FTRACE; arch/x86/kernel/kprobes/ftrace.c \
	 * kprobe_ftrace_handler), with CONFIG_KPROBES_ON_FTRACE as Debian builds it. \
	 */ \
	FBT_ENTRY(FBT_H_FTRACE, NOFX, "call fentry", \
		  FBT_OPC1(0xe8), FBT_TO(FBT_T_FENTRY)), \
\
	/* \
	 * __copy_instruction: "Another subsystem puts a breakpoint" (int3) and \
	 * insn_masking_exception(): MOV to SS (8e /2), and POP_SS_OPCODE, which insn.h defines \
	 * as 0x1f - that is POP DS; POP SS is 17. Both are invalid in 64-bit mode (FBT111). \
	 * The Xen/KVM emulate prefix (insn_has_emulate_prefix: ud2 then "xen" or "kvm") is \
	 * refused there too, but a table matches one decoded instruction and the decoder ends \
	 * it at the ud2: 6.1 lets that fall to the default and steps a plain ud2 (FBT105 flags \
	 * it, the conservative reading of the prefixed form), 6.12's is_exception_insn refuses it. \
	 */ \
	FBT_OP1(0xcc, REFUSE, NOFX, "int3"), \
	FBT_ENTRY(REFUSE, NOFX, "mov to ss", FBT_OPC1(0x8e), FBT_GRP(2)), \
	FBT_OP1(0x1f, REFUSE, NOFX, "pop ds"), \

/* prepare_emulation. */
#define KPROBES_EMULATION_ENTRIES \
	/* \
	 * prepare_emulation: "IF modifiers must be emulated since it will enable interrupt \
	 * while int3 single stepping" (kprobe_emulate_ifmodifiers: CLI/STI edit regs->flags, \
	 * PUSHF = int3_emulate_push(regs, regs->flags), POPF = int3_emulate_pop into them). \
	 */ \
	FBT_OP1(0x9c, EMU, NOFX, "pushf"), \
	FBT_OP1(0x9d, EMU, NOFX, "popf"), \
	FBT_OP1(0xfa, EMU, NOFX, "cli"), \
	FBT_OP1(0xfb, EMU, NOFX, "sti"), \
\
	/* \
	 * prepare_emulation "case 0xc2: case 0xc3: case 0xca: case 0xcb:" -> kprobe_emulate_ret \
	 * -> int3_emulate_ret, which pops the IP and nothing else: ret $imm16 keeps its imm16 \
	 * bytes on the stack, and lret leaves CS there. FBT108 flags lret emulated; no rule can \
	 * see the imm16 slip (the ABI has no "emulated wrongly"). No kernel entry has either. \
	 */ \
	FBT_OP1(0xc3, EMU, NOFX, "ret"), \
	FBT_OP1(0xc2, EMU, NOFX, "ret imm16"), \
	FBT_OP1(0xca, EMU, NOFX, "lret imm16"), \
	FBT_OP1(0xcb, EMU, NOFX, "lret"), \
\
	/* prepare_emulation: "far call/jmp absolute -- segment is not supported", int3, iret. */ \
	FBT_OP1(0x9a, REFUSE, NOFX, "lcall ptr"),	/* invalid in 64-bit mode */ \
	FBT_OP1(0xea, REFUSE, NOFX, "ljmp ptr"),	/* invalid in 64-bit mode */ \
	FBT_OP1(0xcf, REFUSE, NOFX, "iret"),		/* any REX: 48 cf too */ \
\
	/* prepare_emulation: kprobe_emulate_call, _jmp, _jcc (70-7f, 0f 80-8f), _loop. */ \
	FBT_OP1(0xe8, EMU, NOFX, "call rel32"), \
	FBT_OP1(0xe9, EMU, NOFX, "jmp rel32"), \
	FBT_OP1(0xeb, EMU, NOFX, "jmp rel8"), \
	FBT_OP1M(0x70, 0xf0, EMU, NOFX, "jcc rel8"), \
	FBT_OP2M(0x0f, 0x80, 0xf0, EMU, NOFX, "jcc rel32"), \
	FBT_OP1M(0xe0, 0xfc, EMU, NOFX, "loop/jrcxz"), \
\
	/* prepare_emulation: "VM extensions - not supported": 0f 01 with reg=0, mod=3. */ \
	FBT_ENTRY(REFUSE, NOFX, "vmx 0f01/0", FBT_OPC2(0x0f, 0x01), FBT_GRP_REG(0)), \
\
	/* \
	 * prepare_emulation "case 0xff": /3 and /5 (far) are -EOPNOTSUPP; /2 and /4 get \
	 * kprobe_emulate_call_indirect/_jmp_indirect, then "if (insn->addr_bytes != \
	 * sizeof(unsigned long)) return -EOPNOTSUPP" (a 67 prefix) and "if \
	 * (X86_MODRM_MOD(opcode) != 3) return -EOPNOTSUPP; TODO: support memory addressing". \
	 */ \
	FBT_ENTRY(REFUSE, NOFX, "call *a32", FBT_PFX(0x67), FBT_OPC1(0xff), FBT_GRP(2)), \
	FBT_ENTRY(REFUSE, NOFX, "jmp *a32", FBT_PFX(0x67), FBT_OPC1(0xff), FBT_GRP(4)), \
	FBT_ENTRY(EMU, NOFX, "call *reg", FBT_OPC1(0xff), FBT_GRP_REG(2)), \
	FBT_ENTRY(EMU, NOFX, "jmp *reg", FBT_OPC1(0xff), FBT_GRP_REG(4)), \
	FBT_ENTRY(REFUSE, NOFX, "call *mem", FBT_OPC1(0xff), FBT_GRP(2)), \
	FBT_ENTRY(REFUSE, NOFX, "lcall *mem", FBT_OPC1(0xff), FBT_GRP(3)), \
	FBT_ENTRY(REFUSE, NOFX, "jmp *mem", FBT_OPC1(0xff), FBT_GRP(4)), \
	FBT_ENTRY(REFUSE, NOFX, "ljmp *mem", FBT_OPC1(0xff), FBT_GRP(5)), \

#endif /* FBT_KPROBES_COMMON_H */

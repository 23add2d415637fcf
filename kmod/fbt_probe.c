// SPDX-License-Identifier: GPL-2.0
/*
 * fbt_probe.c: prepare FBT probes from the compiled-in table, and the int3 path that runs them.
 *
 * A probe's displaced instruction is decoded and looked up in fbt_emu_table - the same bytes
 * fbt-audit reads from this module's .fbt_emu_table section - and the table decides:
 * emulate it on the saved registers, step a copy of it out of line with the fixups the table
 * names, or refuse, move past it (ENDBR) or leave it to ftrace. A die notifier catches
 * DIE_INT3 (the probe, and the trailing int3 of a copy) and DIE_DEBUG (a TF step), as the
 * kernel's do_int3() and notify_debug() raise them after kprobes has declined.
 *
 * fbt_arm.c writes the int3s and the copies (text_poke) and publishes the armed set, sorted
 * by address, through fbt_probes_publish(); the int3 path finds a probe by binary search.
 */
#include <linux/atomic.h>
#include <linux/kdebug.h>
#include <linux/kernel.h>
#include <linux/notifier.h>
#include <linux/percpu.h>
#include <linux/ptrace.h>
#include <linux/ftrace.h>
#include <asm/debugreg.h>
#include <asm/irqflags.h>
#include <asm/nospec-branch.h>
#include <asm/segment.h>

#include "fbt_probe.h"

#define FBT_KCB_DEPTH		4	/* an NMI may hit a probe while this CPU runs a copy */

/* Per-CPU state of the copies this CPU is running, innermost last. */
struct fbt_kcb_slot {
	struct fbt_probe	*probe;
	struct fbt_step_state	st;
};

struct fbt_kcb {
	struct fbt_kcb_slot	s[FBT_KCB_DEPTH];
	int			depth;
};

static DEFINE_PER_CPU(struct fbt_kcb, fbt_kcb);
/* The armed int3 probes, sorted by address (fbt_probes_publish). */
static struct fbt_probe *fbt_set;
static unsigned int fbt_set_n;

unsigned long fbt_table_size(void)
{
	return sizeof(struct fbt_emu_header) +
	       (unsigned long)fbt_emu_table.hdr.count * sizeof(struct fbt_emu_entry);
}

/* The well-known targets of a direct call or jump (enum fbt_target), as fbt-audit names them. */
static u8 fbt_target_class(unsigned long target)
{
	if (target == (unsigned long)__fentry__)
		return FBT_T_FENTRY;
	if (target == (unsigned long)__x86_return_thunk)
		return FBT_T_RETURN_THUNK;
	if (target >= (unsigned long)__x86_indirect_thunk_rax &&
	    target <= (unsigned long)__x86_indirect_thunk_r15)
		return FBT_T_INDIRECT_THUNK;
	return FBT_T_ANY;
}

static void fbt_regs_from(struct fbt_regs *r, const struct pt_regs *regs)
{
	r->gpr[FBT_RAX] = regs->ax;
	r->gpr[FBT_RCX] = regs->cx;
	r->gpr[FBT_RDX] = regs->dx;
	r->gpr[FBT_RBX] = regs->bx;
	r->gpr[FBT_RSP] = regs->sp;
	r->gpr[FBT_RBP] = regs->bp;
	r->gpr[FBT_RSI] = regs->si;
	r->gpr[FBT_RDI] = regs->di;
	r->gpr[FBT_R8] = regs->r8;
	r->gpr[FBT_R9] = regs->r9;
	r->gpr[FBT_R10] = regs->r10;
	r->gpr[FBT_R11] = regs->r11;
	r->gpr[FBT_R12] = regs->r12;
	r->gpr[FBT_R13] = regs->r13;
	r->gpr[FBT_R14] = regs->r14;
	r->gpr[FBT_R15] = regs->r15;
	r->ip = regs->ip;
	r->flags = regs->flags;
	r->cs = regs->cs;
}

static void fbt_regs_to(struct pt_regs *regs, const struct fbt_regs *r)
{
	regs->ax = r->gpr[FBT_RAX];
	regs->cx = r->gpr[FBT_RCX];
	regs->dx = r->gpr[FBT_RDX];
	regs->bx = r->gpr[FBT_RBX];
	regs->sp = r->gpr[FBT_RSP];
	regs->bp = r->gpr[FBT_RBP];
	regs->si = r->gpr[FBT_RSI];
	regs->di = r->gpr[FBT_RDI];
	regs->r8 = r->gpr[FBT_R8];
	regs->r9 = r->gpr[FBT_R9];
	regs->r10 = r->gpr[FBT_R10];
	regs->r11 = r->gpr[FBT_R11];
	regs->r12 = r->gpr[FBT_R12];
	regs->r13 = r->gpr[FBT_R13];
	regs->r14 = r->gpr[FBT_R14];
	regs->r15 = r->gpr[FBT_R15];
	regs->ip = r->ip;
	regs->flags = r->flags;
}

/*
 * Would fbt_emulate() take this instruction? A dry run on a scratch stack filled with the
 * kernel CS selector in every 32-bit slot, so that a far return of either operand size finds
 * the selector it needs.
 */
static bool fbt_can_emulate(const struct fbt_insn *insn)
{
	u64 stack[8];
	struct fbt_regs r = { .cs = __KERNEL_CS, .flags = X86_EFLAGS_FIXED };
	u64 live = X86_EFLAGS_FIXED;
	int i;

	for (i = 0; i < ARRAY_SIZE(stack); i++)
		stack[i] = (u64)__KERNEL_CS << 32 | __KERNEL_CS;
	r.gpr[FBT_RSP] = (unsigned long)&stack[4];
	return fbt_emulate(insn, &fbt_emu_table.hdr, &r, &live) == 0;
}

/*
 * The fixups of a step that act on this instruction (what verify reports as exercised): the
 * IF restore on every step, the others only on the instructions they are for.
 */
static u32 fbt_active_fixups(const struct fbt_insn *in, u32 fx)
{
	u32 on = fx & FBT_FX_LIVE_IF;
	bool one = !in->vex && in->map == 0, two = !in->vex && in->map == 1;
	u8 op = in->op, reg = in->modrm_off >= 0 ? (in->bytes[in->modrm_off] >> 3) & 7 : 0;
	bool relbr = (one && ((op >= 0x70 && op <= 0x7f) || (op >= 0xe0 && op <= 0xe3) ||
			      op == 0xe8 || op == 0xe9 || op == 0xeb)) ||
		     (two && op >= 0x80 && op <= 0x8f);
	bool indirect = one && op == 0xff && (reg == 2 || reg == 4);
	bool call = (one && op == 0xe8) || (indirect && reg == 2);
	bool ret = one && (op == 0xc2 || op == 0xc3 || op == 0xca || op == 0xcb);
	bool rep = one && (in->pfx & (FBT_P_F2 | FBT_P_F3)) &&
		   ((op >= 0x6c && op <= 0x6f) || (op >= 0xa4 && op <= 0xa7) || (op >= 0xaa && op <= 0xaf));

	if (in->modrm_off >= 0 && (in->bytes[in->modrm_off] & 0xc7) == 0x05)
		on |= fx & FBT_FX_RIP_DISP;
	if (relbr)
		on |= fx & FBT_FX_BRANCH_TARGET;
	if (call)
		on |= fx & FBT_FX_RETURN_ADDR;
	if (indirect || ret)
		on |= fx & FBT_FX_TRANSFER_IP;
	if (one && op == 0x9c)
		on |= fx & FBT_FX_PUSHED_FLAGS;
	if (rep)
		on |= fx & FBT_FX_REP_CONT;
	return on;
}

/*
 * Prepare probe p at addr, whose instruction bytes are bytes[0..len), with its copy to run at
 * slot. The bytes are the instruction as built - for an ftrace site its call __fentry__, as
 * fbt-audit's disk variant has it, not the NOP ftrace leaves there at boot.
 *
 * Returns 0 when an int3 probe can go there, 1 when the table moves the probe past this
 * instruction (addr + p->insn.len), 2 when the site is to be probed through ftrace, and
 * -EPERM (the table refuses), -EILSEQ (undecodable), -EOPNOTSUPP (the engine cannot do what
 * the table says) or -ERANGE (the copy is too far for a RIP-relative displacement).
 */
int fbt_probe_prepare(struct fbt_probe *p, unsigned long addr, const u8 *bytes,
		      unsigned int len, unsigned long slot)
{
	u32 fixups;
	int ret;

	memset(p, 0, sizeof(*p));
	p->addr = addr;
	if (fbt_decode(&p->insn, bytes, len) < 0)
		return -EILSEQ;
	if (p->insn.map == 0 && !p->insn.vex && (p->insn.op == 0xe8 || p->insn.op == 0xe9)) {
		s32 rel;

		memcpy(&rel, p->insn.bytes + p->insn.imm_off, sizeof(rel));
		p->insn.target_class = fbt_target_class(addr + p->insn.len + rel);
	}
	p->handling = fbt_effective(&fbt_emu_table, &p->insn, &p->entry, &fixups);
	p->fixups = fixups;
	p->active_fx = p->handling == FBT_H_STEP ? fbt_active_fixups(&p->insn, fixups) : 0;
	switch (p->handling) {
	case FBT_H_EMULATE:
		return fbt_can_emulate(&p->insn) ? 0 : -EOPNOTSUPP;
	case FBT_H_STEP:
		ret = fbt_step_prepare(&p->step, &p->insn, &fbt_emu_table.hdr, fixups, addr, slot);
		if (ret == -FBT_ERANGE)
			return -ERANGE;
		return ret < 0 ? -EOPNOTSUPP : 0;
	case FBT_H_MOVE:
		return 1;
	case FBT_H_FTRACE:
		return 2;
	}
	return -EPERM;
}

/*
 * Make a sorted array of prepared probes the set the int3 path searches (NULL, 0: none). The
 * caller writes no int3 for a probe before it is published, and frees an old set only after
 * synchronize_rcu() (the int3 path runs with preemption off).
 */
void fbt_probes_publish(struct fbt_probe *sorted, unsigned int n)
{
	WRITE_ONCE(fbt_set_n, 0);
	smp_wmb();		/* no reader pairs the new array with the old count */
	WRITE_ONCE(fbt_set, sorted);
	smp_wmb();
	WRITE_ONCE(fbt_set_n, n);
}

/* Binary search of a sorted probe array. */
struct fbt_probe *fbt_probe_find(struct fbt_probe *sorted, unsigned int n, unsigned long addr)
{
	unsigned int lo = 0, hi = n;

	while (lo < hi) {
		unsigned int mid = lo + (hi - lo) / 2;

		if (sorted[mid].addr == addr)
			return &sorted[mid];
		if (sorted[mid].addr < addr)
			lo = mid + 1;
		else
			hi = mid;
	}
	return NULL;
}

static struct fbt_probe *fbt_probe_at(unsigned long addr)
{
	unsigned int n = READ_ONCE(fbt_set_n);

	smp_rmb();		/* pairs with fbt_probes_publish(): the count covers the array read */
	return fbt_probe_find(READ_ONCE(fbt_set), n, addr);
}

static bool fbt_in_copy(const struct fbt_step_state *st, unsigned long ip)
{
	return ip >= st->slot_ip && ip < st->slot_ip + st->copy_len;
}

static struct fbt_kcb_slot *fbt_kcb_top(struct fbt_kcb *kcb)
{
	return kcb->depth > 0 ? &kcb->s[kcb->depth - 1] : NULL;
}

/* The copy stopped at stop_ip (its trailing int3, or after a TF step): apply the fixups. */
static bool fbt_step_finish(struct fbt_kcb *kcb, struct pt_regs *regs, unsigned long stop_ip)
{
	struct fbt_kcb_slot *top = fbt_kcb_top(kcb);
	struct fbt_regs r;
	int ret;

	fbt_regs_from(&r, regs);
	r.ip = stop_ip;
	ret = fbt_step_end(&top->st, &r);
	if (ret < 0) {
		/* The copy went where it cannot: resume at the probe, like kprobes' fault path. */
		WARN_ONCE(1, "fbt: copy of %pS stopped at %lx\n", (void *)top->st.orig_ip, stop_ip);
		regs->ip = top->st.orig_ip;
		regs->flags = top->st.saved_flags;
		kcb->depth--;
		return true;
	}
	fbt_regs_to(regs, &r);
	if (ret == FBT_STEP_DONE)
		kcb->depth--;
	return true;
}

/* An int3 at addr: one of our probes, or the trailing int3 of the copy this CPU runs. */
static bool fbt_int3(struct pt_regs *regs)
{
	struct fbt_kcb *kcb = this_cpu_ptr(&fbt_kcb);
	struct fbt_kcb_slot *top = fbt_kcb_top(kcb);
	unsigned long addr = regs->ip - 1;
	struct fbt_probe *p;
	struct fbt_regs r;
	u64 live;

	if (top && top->st.mechanism == FBT_STEP_INT3 && fbt_in_copy(&top->st, addr))
		return fbt_step_finish(kcb, regs, addr);
	p = fbt_probe_at(addr);
	if (!p)
		return false;
	atomic_long_inc(&p->hits);

	fbt_regs_from(&r, regs);
	r.ip = addr;
	switch (p->handling) {
	case FBT_H_EMULATE:
		/* emu_flags LIVE reads the handler's own flags: the seed's bug, on request. */
		live = native_save_fl();
		if (fbt_emulate(&p->insn, &fbt_emu_table.hdr, &r, &live)) {
			WARN_ONCE(1, "fbt: cannot emulate at %pS\n", (void *)addr);
			return false;
		}
		fbt_regs_to(regs, &r);
		return true;
	case FBT_H_STEP:
		if (kcb->depth >= FBT_KCB_DEPTH) {
			WARN_ONCE(1, "fbt: probes nested too deep at %pS\n", (void *)addr);
			return false;
		}
		top = &kcb->s[kcb->depth++];
		top->probe = p;
		top->st = p->step;
		fbt_step_begin(&top->st, &r);
		fbt_regs_to(regs, &r);
		return true;
	}
	return false;
}

static int fbt_die_notify(struct notifier_block *nb, unsigned long val, void *data)
{
	struct die_args *args = data;
	struct pt_regs *regs = args->regs;
	struct fbt_kcb_slot *top;
	struct fbt_kcb *kcb;
	unsigned long dr6;

	if (!regs || user_mode(regs))
		return NOTIFY_DONE;
	kcb = this_cpu_ptr(&fbt_kcb);
	top = fbt_kcb_top(kcb);
	switch (val) {
	case DIE_INT3:
		return fbt_int3(regs) ? NOTIFY_STOP : NOTIFY_DONE;
	case DIE_DEBUG:
		/*
		 * A TF step completed. notify_debug() passes a pointer to DR6 as err (as
		 * hw_breakpoint_handler() reads it), not DR6 itself.
		 */
		dr6 = *(unsigned long *)args->err;
		if (top && top->st.mechanism == FBT_STEP_TF && (dr6 & DR_STEP))
			return fbt_step_finish(kcb, regs, regs->ip) ? NOTIFY_STOP : NOTIFY_DONE;
		return NOTIFY_DONE;
	case DIE_GPF:
	case DIE_TRAP:
		/*
		 * A fault in a copy: with fault_fixup, hand it back at the original IP and flags
		 * (as kprobe_fault_handler does), so exception-table fixups keyed on that IP apply.
		 */
		if (top && fbt_emu_table.hdr.fault_fixup && fbt_in_copy(&top->st, regs->ip)) {
			regs->ip = top->st.orig_ip;
			regs->flags = top->st.saved_flags;
			kcb->depth--;
		}
		return NOTIFY_DONE;
	}
	return NOTIFY_DONE;
}

static struct notifier_block fbt_die_nb = {
	.notifier_call = fbt_die_notify,
	/* after kprobes (which the kernel calls first anyway) */
	.priority = 0,
};

int fbt_int3_init(void)
{
	return register_die_notifier(&fbt_die_nb);
}

void fbt_int3_exit(void)
{
	unregister_die_notifier(&fbt_die_nb);
}

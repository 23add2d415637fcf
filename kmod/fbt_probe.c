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
 * Not here yet: writing the int3 into kernel text and installing copies into executable
 * slots (text poking). fbt_probe_publish() makes a prepared probe visible to the int3 path,
 * so the path is live for any int3 at a published address, but nothing arms one.
 */
#include <linux/atomic.h>
#include <linux/kdebug.h>
#include <linux/kernel.h>
#include <linux/mutex.h>
#include <linux/notifier.h>
#include <linux/percpu.h>
#include <linux/ptrace.h>
#include <linux/ftrace.h>
#include <asm/debugreg.h>
#include <asm/irqflags.h>
#include <asm/nospec-branch.h>
#include <asm/segment.h>

#include "fbt_probe.h"

#define FBT_MAX_PROBES		4096

/* Per-CPU state of the copy this CPU is running (int3 handlers do not nest on one CPU). */
struct fbt_kcb {
	struct fbt_probe	*probe;
	struct fbt_step_state	st;
	bool			active;
};

static DEFINE_PER_CPU(struct fbt_kcb, fbt_kcb);
static struct fbt_probe *fbt_probes[FBT_MAX_PROBES];
static unsigned int fbt_nr_probes;
static DEFINE_MUTEX(fbt_probes_lock);

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

/* Make a prepared probe visible to the int3 path. */
int fbt_probe_publish(struct fbt_probe *p)
{
	int ret = -ENOSPC;

	mutex_lock(&fbt_probes_lock);
	if (fbt_nr_probes < FBT_MAX_PROBES) {
		fbt_probes[fbt_nr_probes] = p;
		/* pairs with fbt_probe_at(): the slot is written before the count covers it */
		smp_store_release(&fbt_nr_probes, fbt_nr_probes + 1);
		ret = 0;
	}
	mutex_unlock(&fbt_probes_lock);
	return ret;
}

static struct fbt_probe *fbt_probe_at(unsigned long addr)
{
	/* pairs with fbt_probe_publish(): every slot below n is written */
	unsigned int i, n = smp_load_acquire(&fbt_nr_probes);

	for (i = 0; i < n; i++)
		if (READ_ONCE(fbt_probes[i])->addr == addr)
			return fbt_probes[i];
	return NULL;
}

static bool fbt_in_copy(const struct fbt_kcb *kcb, unsigned long ip)
{
	return ip >= kcb->st.slot_ip && ip < kcb->st.slot_ip + kcb->st.copy_len;
}

/* The copy stopped at stop_ip (its trailing int3, or after a TF step): apply the fixups. */
static bool fbt_step_finish(struct fbt_kcb *kcb, struct pt_regs *regs, unsigned long stop_ip)
{
	struct fbt_regs r;
	int ret;

	fbt_regs_from(&r, regs);
	r.ip = stop_ip;
	ret = fbt_step_end(&kcb->st, &r);
	if (ret < 0) {
		/* The copy went where it cannot: resume at the probe, like kprobes' fault path. */
		WARN_ONCE(1, "fbt: copy of %pS stopped at %lx\n", (void *)kcb->st.orig_ip, stop_ip);
		regs->ip = kcb->st.orig_ip;
		regs->flags = kcb->st.saved_flags;
		kcb->active = false;
		return true;
	}
	fbt_regs_to(regs, &r);
	if (ret == FBT_STEP_DONE)
		kcb->active = false;
	return true;
}

/* An int3 at addr: one of our probes, or the trailing int3 of the copy this CPU runs. */
static bool fbt_int3(struct pt_regs *regs)
{
	struct fbt_kcb *kcb = this_cpu_ptr(&fbt_kcb);
	unsigned long addr = regs->ip - 1;
	struct fbt_probe *p;
	struct fbt_regs r;
	u64 live;

	if (kcb->active && kcb->st.mechanism == FBT_STEP_INT3 && fbt_in_copy(kcb, addr))
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
		if (kcb->active)
			return false;		/* a probe hit inside a step: not ours to nest */
		kcb->probe = p;
		kcb->st = p->step;
		kcb->active = true;
		fbt_step_begin(&kcb->st, &r);
		fbt_regs_to(regs, &r);
		return true;
	}
	return false;
}

static int fbt_die_notify(struct notifier_block *nb, unsigned long val, void *data)
{
	struct die_args *args = data;
	struct pt_regs *regs = args->regs;
	struct fbt_kcb *kcb;

	if (!regs || user_mode(regs))
		return NOTIFY_DONE;
	kcb = this_cpu_ptr(&fbt_kcb);
	switch (val) {
	case DIE_INT3:
		return fbt_int3(regs) ? NOTIFY_STOP : NOTIFY_DONE;
	case DIE_DEBUG:
		/* A TF step completed: err is DR6. */
		if (kcb->active && kcb->st.mechanism == FBT_STEP_TF && (args->err & DR_STEP))
			return fbt_step_finish(kcb, regs, regs->ip) ? NOTIFY_STOP : NOTIFY_DONE;
		return NOTIFY_DONE;
	case DIE_GPF:
	case DIE_TRAP:
		/*
		 * A fault in a copy: with fault_fixup, hand it back at the original IP and flags
		 * (as kprobe_fault_handler does), so exception-table fixups keyed on that IP apply.
		 */
		if (kcb->active && fbt_emu_table.hdr.fault_fixup && fbt_in_copy(kcb, regs->ip)) {
			regs->ip = kcb->st.orig_ip;
			regs->flags = kcb->st.saved_flags;
			kcb->active = false;
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

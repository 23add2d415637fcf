// SPDX-License-Identifier: GPL-2.0
/*
 * fbt_native.c: run code on the CPU from a given register state and capture where it stopped.
 *
 * For tests/test_kmod_engine.py, built into a temporary shared library. fbt_native_run() loads
 * all sixteen registers and RFLAGS and enters the code with iretq (so TF takes effect at the
 * first instruction), then the first trap or fault - an int3, a TF single-step, a SIGSEGV -
 * lands in a signal handler on an alternate stack, which copies the registers out of the
 * ucontext and siglongjmp()s back. The state layout is struct fbt_regs (kmod/fbt_engine.h).
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <ucontext.h>

struct fbt_native_regs {
	uint64_t gpr[16];	/* rax rcx rdx rbx rsp rbp rsi rdi r8..r15 */
	uint64_t ip;
	uint64_t flags;
	uint64_t cs;
};

static sigjmp_buf fbt_jb;
static struct fbt_native_regs *fbt_out;
static volatile int fbt_sig, fbt_code;
static uint64_t fbt_frame[20];	/* 15 registers for pop, then the iretq frame */
static char fbt_altstack[1 << 16];
static uint16_t fbt_cs, fbt_ss;

static const int fbt_greg[16] = {
	REG_RAX, REG_RCX, REG_RDX, REG_RBX, REG_RSP, REG_RBP, REG_RSI, REG_RDI,
	REG_R8, REG_R9, REG_R10, REG_R11, REG_R12, REG_R13, REG_R14, REG_R15,
};

static void fbt_on_signal(int sig, siginfo_t *si, void *ctx)
{
	ucontext_t *uc = ctx;
	greg_t *g = uc->uc_mcontext.gregs;
	int i;

	for (i = 0; i < 16; i++)
		fbt_out->gpr[i] = (uint64_t)g[fbt_greg[i]];
	fbt_out->ip = (uint64_t)g[REG_RIP];
	fbt_out->flags = (uint64_t)g[REG_EFL];
	fbt_out->cs = (uint64_t)g[REG_CSGSFS] & 0xffff;
	fbt_sig = sig;
	fbt_code = si->si_code;
	siglongjmp(fbt_jb, 1);
}

int fbt_native_init(void)
{
	static const int sigs[] = { SIGTRAP, SIGSEGV, SIGBUS, SIGILL, SIGFPE };
	stack_t ss = { .ss_sp = fbt_altstack, .ss_size = sizeof(fbt_altstack) };
	struct sigaction sa;
	unsigned int i;

	if (sigaltstack(&ss, NULL))
		return -1;
	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = fbt_on_signal;
	sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_NODEFER;
	sigemptyset(&sa.sa_mask);
	for (i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
		if (sigaction(sigs[i], &sa, NULL))
			return -1;
	__asm__ volatile("mov %%cs, %0; mov %%ss, %1" : "=r"(fbt_cs), "=r"(fbt_ss));
	return 0;
}

/* Memory below 2 GiB (MAP_32BIT), so 32-bit far returns and disp32 absolute forms reach it. */
void *fbt_native_map(size_t size, int exec)
{
	void *p = mmap(NULL, size, PROT_READ | PROT_WRITE | (exec ? PROT_EXEC : 0),
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_32BIT, -1, 0);

	return p == MAP_FAILED ? NULL : p;
}

uint64_t fbt_native_cs(void)
{
	return fbt_cs;
}

/* Returns the signal that stopped the code; *code is its si_code. */
int fbt_native_run(const struct fbt_native_regs *in, struct fbt_native_regs *out, int *code)
{
	static const int order[15] = { 0, 1, 2, 3, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15 };
	int i;

	for (i = 0; i < 15; i++)
		fbt_frame[i] = in->gpr[order[i]];
	fbt_frame[15] = in->ip;
	fbt_frame[16] = fbt_cs;
	fbt_frame[17] = in->flags;
	fbt_frame[18] = in->gpr[4];
	fbt_frame[19] = fbt_ss;
	fbt_out = out;
	if (sigsetjmp(fbt_jb, 1) == 0) {
		__asm__ volatile(
			"mov %0, %%rsp\n\t"
			"pop %%rax\n\tpop %%rcx\n\tpop %%rdx\n\tpop %%rbx\n\t"
			"pop %%rbp\n\tpop %%rsi\n\tpop %%rdi\n\t"
			"pop %%r8\n\tpop %%r9\n\tpop %%r10\n\tpop %%r11\n\t"
			"pop %%r12\n\tpop %%r13\n\tpop %%r14\n\tpop %%r15\n\t"
			"iretq"
			: : "r"(fbt_frame) : "memory");
		__builtin_unreachable();
	}
	*code = fbt_code;
	return fbt_sig;
}

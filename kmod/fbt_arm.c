// SPDX-License-Identifier: GPL-2.0
/*
 * fbt_arm.c: arm and disarm FBT probes in live kernel text, from a debugfs control file.
 *
 * /sys/kernel/debug/fbt/control takes, in one open..close session:
 *   - a probe-safety list (`fbt-audit --format list`): every row the list calls safe is armed,
 *     and the list becomes the policy for later `func+0xoff` lines;
 *   - a denylist (`fbt-audit --format denylist`, its header says so): it becomes the policy,
 *     nothing is armed;
 *   - `[module:]function+0xoff` lines: armed when the policy calls them safe;
 *   - `force`: arm what the list or policy does not call safe; `disarm`: arm nothing;
 *     `arm`: the `func+0xoff` lines after a denylist are to be armed, not denied.
 * At close the session's probes replace the armed set. Text is never written directly: int3s
 * and out-of-line copies go through the kernel's text_poke() and text_poke_sync() under
 * text_mutex (as arch_arm_kprobe does), found with kallsyms_lookup_name(), which a kprobe
 * finds (it is no longer exported since 5.7). A `call __fentry__` site is armed through an
 * ftrace_ops instead, as the table's FTRACE handling says (kprobes-on-ftrace).
 * /sys/kernel/debug/fbt/hits lists every armed probe with its hit count; .../status says what
 * the last session armed and why the rest was refused. Only vmlinux text is armed.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/bsearch.h>
#include <linux/debugfs.h>
#include <linux/ftrace.h>
#include <linux/kallsyms.h>
#include <linux/kernel.h>
#include <linux/kprobes.h>
#include <linux/ktime.h>
#include <linux/mm.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/seq_file.h>
#include <linux/slab.h>
#include <linux/sort.h>
#include <linux/uaccess.h>
#include <linux/vmalloc.h>
#include <asm/nospec-branch.h>

#include "fbt_arm.h"
#include "fbt_probe.h"
#include "fbt_slots.h"

#define FBT_LINE_MAX	512
#define FBT_LINK_TEXT	0xffffffff81000000UL	/* x86-64 _text at link time (no KASLR) */

enum fbt_refusal {
	FBT_R_POLICY, FBT_R_NOSYM, FBT_R_MISMATCH, FBT_R_NOTTEXT, FBT_R_INT3, FBT_R_TABLE,
	FBT_R_DECODE, FBT_R_ENGINE, FBT_R_RANGE, FBT_R_MOVE, FBT_R_SLOTS, FBT_R_FTRACE,
	FBT_R_COPIED, FBT_R_NR,
};

static const char *const fbt_refusal_name[FBT_R_NR] = {
	"not-safe", "no-symbol", "symbol-mismatch", "not-vmlinux-text", "already-int3",
	"table-refuses", "undecodable", "engine-cannot", "rip-out-of-range", "table-moves",
	"no-slot-left", "not-ftrace-site", "copied-by-ftrace",
};

/*
 * Text the kernel copies at run time: arch/x86/kernel/ftrace.c create_trampoline() copies
 * ftrace_caller..ftrace_caller_end or ftrace_regs_caller..ftrace_regs_caller_end into every
 * dynamic trampoline, so an int3 there would be copied where no handler knows it (found by
 * fbt-audit verify: "int3: 0000 [#1]" at the first byte of a new trampoline).
 */
static const char *const fbt_copied[][2] = {
	{ "ftrace_caller", "ftrace_caller_end" },
	{ "ftrace_regs_caller", "ftrace_regs_caller_end" },
};
static unsigned long fbt_copied_range[ARRAY_SIZE(fbt_copied)][2];

static const char *const fbt_handling_name[] = {
	"none", "emulate", "step", "refuse", "move", "ftrace",
};

/* Kernel functions and data that are not exported, found through kallsyms_lookup_name(). */
static unsigned long (*fbt_kln)(const char *name);
static void *(*fbt_text_poke)(void *addr, const void *opcode, size_t len);
static void (*fbt_text_poke_sync)(void);
static unsigned long (*fbt_ftrace_location)(unsigned long ip);
static int (*fbt_core_kernel_text)(unsigned long addr);
static struct mutex *fbt_text_mutex;

/* One request of a session. */
struct fbt_req {
	unsigned long	addr;
	u8		listed;		/* from a list row, which says its own verdict */
	u8		safe;		/* the row's verdict is safe */
};

struct fbt_session {
	char		line[FBT_LINE_MAX];
	unsigned int	len;
	bool		overlong, force, disarm, denylist, had_deny, had_rows, delta_known;
	unsigned long	delta;		/* KASLR: live _text - link _text */
	ktime_t		opened;
	struct fbt_req	*req;
	unsigned int	nreq, capreq;
	unsigned long	*deny, *safe;	/* policy read in this session */
	unsigned int	ndeny, capdeny, nsafe, capsafe;
	unsigned int	bad_lines;
};

struct fbt_refused {
	unsigned long	addr;
	u8		why;
};

static bool trace_arm;
module_param(trace_arm, bool, 0644);
MODULE_PARM_DESC(trace_arm, "log each int3 before it is written (to find a probe that stops the kernel)");

static DEFINE_MUTEX(fbt_arm_lock);	/* sessions commit one at a time */
/* The armed probes (sorted by address): int3 ones, then ftrace ones, in one array. */
static struct fbt_probe *fbt_armed;
static unsigned int fbt_n_int3, fbt_n_ftrace;
/* The policy: the safe rows of the last list, else the last denylist. */
static unsigned long *fbt_pol_safe, *fbt_pol_deny;
static unsigned int fbt_pol_nsafe, fbt_pol_ndeny;
static bool fbt_pol_has_safe, fbt_pol_has_deny;
/* What the last commit did. */
static unsigned int fbt_refused_count[FBT_R_NR], fbt_last_requests, fbt_last_bad_lines;
static struct fbt_refused *fbt_refused;
static unsigned int fbt_n_refused;
static bool fbt_ftrace_on;

static void notrace fbt_ftrace_hit(unsigned long ip, unsigned long parent_ip,
				   struct ftrace_ops *op, struct ftrace_regs *fregs)
{
	struct fbt_probe *set = READ_ONCE(fbt_armed);
	struct fbt_probe *p;

	if (!set)
		return;
	p = fbt_probe_find(set + fbt_n_int3, READ_ONCE(fbt_n_ftrace), ip);
	if (p)
		atomic_long_inc(&p->hits);
}

static struct ftrace_ops fbt_ftrace_ops = {
	.func = fbt_ftrace_hit,
	.flags = FTRACE_OPS_FL_RECURSION,
};

static int fbt_find_kln(void)
{
	struct kprobe kp = { .symbol_name = "kallsyms_lookup_name" };
	int ret = register_kprobe(&kp);

	if (ret < 0)
		return ret;
	fbt_kln = (void *)kp.addr;
	unregister_kprobe(&kp);
	return 0;
}

static bool fbt_is_copied(unsigned long addr)
{
	unsigned int i;

	for (i = 0; i < ARRAY_SIZE(fbt_copied_range); i++)
		if (fbt_copied_range[i][0] && addr >= fbt_copied_range[i][0] &&
		    addr <= fbt_copied_range[i][1])
			return true;
	return false;
}

int fbt_arm_init(void)
{
	int ret = fbt_find_kln();
	unsigned int i;

	if (ret) {
		pr_err("cannot find kallsyms_lookup_name through a kprobe (%d)\n", ret);
		return ret;
	}
	fbt_text_poke = (void *)fbt_kln("text_poke");
	fbt_text_poke_sync = (void *)fbt_kln("text_poke_sync");
	fbt_ftrace_location = (void *)fbt_kln("ftrace_location");
	fbt_core_kernel_text = (void *)fbt_kln("core_kernel_text");
	fbt_text_mutex = (void *)fbt_kln("text_mutex");
	for (i = 0; i < ARRAY_SIZE(fbt_copied); i++) {
		fbt_copied_range[i][0] = fbt_kln(fbt_copied[i][0]);
		fbt_copied_range[i][1] = fbt_kln(fbt_copied[i][1]);
	}
	if (!fbt_text_poke || !fbt_text_poke_sync || !fbt_ftrace_location ||
	    !fbt_core_kernel_text || !fbt_text_mutex) {
		pr_err("kallsyms lacks text_poke, text_poke_sync, ftrace_location, core_kernel_text or text_mutex\n");
		return -ENOENT;
	}
	return 0;
}

static int fbt_cmp_ulong(const void *a, const void *b)
{
	unsigned long x = *(const unsigned long *)a, y = *(const unsigned long *)b;

	return x < y ? -1 : x > y;
}

static int fbt_cmp_req(const void *a, const void *b)
{
	return fbt_cmp_ulong(&((const struct fbt_req *)a)->addr, &((const struct fbt_req *)b)->addr);
}

static bool fbt_in_set(const unsigned long *set, unsigned int n, unsigned long addr)
{
	return set && bsearch(&addr, set, n, sizeof(*set), fbt_cmp_ulong);
}

/* Append to a kvmalloc'ed array, doubling it. */
static int fbt_grow(void **arr, unsigned int *cap, unsigned int n, size_t size)
{
	void *bigger;
	unsigned int ncap;

	if (n < *cap)
		return 0;
	ncap = *cap ? *cap * 2 : 1024;
	bigger = kvmalloc_array(ncap, size, GFP_KERNEL);
	if (!bigger)
		return -ENOMEM;
	if (*arr)
		memcpy(bigger, *arr, (size_t)n * size);
	kvfree(*arr);
	*arr = bigger;
	*cap = ncap;
	return 0;
}

static int fbt_add_ulong(unsigned long **arr, unsigned int *n, unsigned int *cap, unsigned long v)
{
	int ret = fbt_grow((void **)arr, cap, *n, sizeof(**arr));

	if (!ret)
		(*arr)[(*n)++] = v;
	return ret;
}

static int fbt_add_req(struct fbt_session *s, unsigned long addr, bool listed, bool safe)
{
	int ret = fbt_grow((void **)&s->req, &s->capreq, s->nreq, sizeof(*s->req));

	if (ret)
		return ret;
	s->req[s->nreq].addr = addr;
	s->req[s->nreq].listed = listed;
	s->req[s->nreq].safe = safe;
	s->nreq++;
	return 0;
}

/* "kernel:func" or "func": the vmlinux symbol's address; a module prefix or no symbol: 0. */
static unsigned long fbt_symbol(const char *modfunc)
{
	const char *colon = strchr(modfunc, ':');

	if (colon) {
		if (colon - modfunc != 6 || strncmp(modfunc, "kernel", 6))
			return 0;	/* only vmlinux text is armed */
		modfunc = colon + 1;
	}
	return fbt_kln(modfunc);
}

/*
 * Is addr func+0xoff? sprint_symbol() searches by address; where several names share an address
 * it prints one of them, so another name at the same offset is an alias, and accepted.
 */
static bool fbt_names(unsigned long addr, const char *func, unsigned long off)
{
	char buf[KSYM_SYMBOL_LEN], want[KSYM_NAME_LEN + 24], *plus, *slash;
	unsigned long got;

	sprint_symbol(buf, addr);
	snprintf(want, sizeof(want), "%s+0x%lx/", func, off);
	if (!strncmp(buf, want, strlen(want)))
		return true;
	plus = strrchr(buf, '+');
	slash = plus ? strchr(plus, '/') : NULL;
	if (!slash)
		return false;
	*slash = '\0';
	return !kstrtoul(plus + 1, 0, &got) && got == off;
}

/* `[module:]function+0xoff[@file[#N]]`: a denylist entry or an arm request. */
static int fbt_parse_plain(struct fbt_session *s, char *line)
{
	char *plus = strrchr(line, '+'), *at = strchr(line, '@');
	unsigned long off, addr;

	if (at)
		*at = '\0';	/* kallsyms cannot tell statics apart by file: the first of the name */
	if (!plus || kstrtoul(plus + 1, 0, &off))
		return -EINVAL;
	*plus = '\0';
	addr = fbt_symbol(line);
	if (s->denylist)
		return addr ? fbt_add_ulong(&s->deny, &s->ndeny, &s->capdeny, addr + off) : 0;
	if (!addr) {
		fbt_refused_count[FBT_R_NOSYM]++;
		return 0;
	}
	return fbt_add_req(s, addr + off, false, false);
}

/*
 * A probe-safety list row: index count patchpoint opcode inslen modrm name verdict rules bytes
 * symoff kind live. The address is the patchpoint moved by the KASLR offset, checked against
 * kallsyms: the name's symbol plus symoff.
 */
static int fbt_parse_row(struct fbt_session *s, char *line)
{
	char *f[11], *func, *end;
	unsigned long pp, off, addr, sym;
	bool safe;
	int i;

	for (i = 0; i < ARRAY_SIZE(f); i++) {
		f[i] = strsep(&line, "\t");
		if (!f[i])
			return -EINVAL;
	}
	if (kstrtoul(f[2], 16, &pp) || kstrtoul(f[10] + (f[10][0] == '+'), 0, &off))
		return -EINVAL;
	func = f[6];
	end = strrchr(func, ':');	/* module:function:entry */
	if (!end)
		return -EINVAL;
	*end = '\0';
	safe = !strcmp(f[7], "safe");
	s->had_rows = true;
	if (strncmp(func, "kernel:", 7)) {
		fbt_refused_count[FBT_R_NOTTEXT]++;
		return 0;
	}
	func += 7;
	if (!s->delta_known) {
		s->delta = fbt_kln("_text") - FBT_LINK_TEXT;
		s->delta_known = true;
	}
	addr = pp + s->delta;
	/* kallsyms_lookup_name() scans every name in 6.1: asked only when the offset disagrees */
	if (!fbt_names(addr, func, off)) {
		sym = fbt_kln(func);
		if (sym + off != addr) {
			fbt_refused_count[sym ? FBT_R_MISMATCH : FBT_R_NOSYM]++;
			return 0;
		}
	}
	if (safe)
		return fbt_add_ulong(&s->safe, &s->nsafe, &s->capsafe, addr) ?: fbt_add_req(s, addr, true, true);
	return fbt_add_ulong(&s->deny, &s->ndeny, &s->capdeny, addr) ?: fbt_add_req(s, addr, true, false);
}

static int fbt_parse_line(struct fbt_session *s, char *line)
{
	size_t n = strlen(line);

	while (n && (line[n - 1] == '\r' || line[n - 1] == ' '))
		line[--n] = '\0';
	while (*line == ' ')
		line++;
	if (!*line)
		return 0;
	if (*line == '#') {
		if (strstr(line, "format denylist"))
			s->denylist = s->had_deny = true;
		return 0;
	}
	if (!strcmp(line, "force")) {
		s->force = true;
		return 0;
	}
	if (!strcmp(line, "disarm")) {
		s->disarm = true;
		return 0;
	}
	if (!strcmp(line, "arm")) {
		s->denylist = false;	/* the lines after a denylist are to be armed */
		return 0;
	}
	if (strchr(line, '\t'))
		return fbt_parse_row(s, line);
	return fbt_parse_plain(s, line);
}

static int fbt_control_open(struct inode *inode, struct file *file)
{
	struct fbt_session *s = kzalloc(sizeof(*s), GFP_KERNEL);

	if (!s)
		return -ENOMEM;
	mutex_lock(&fbt_arm_lock);
	memset(fbt_refused_count, 0, sizeof(fbt_refused_count));
	mutex_unlock(&fbt_arm_lock);
	s->opened = ktime_get();
	file->private_data = s;
	return 0;
}

static ssize_t fbt_control_write(struct file *file, const char __user *ubuf, size_t count, loff_t *ppos)
{
	struct fbt_session *s = file->private_data;
	char chunk[256];
	size_t done = 0;
	int ret = 0;

	while (done < count && !ret) {
		size_t n = min(count - done, sizeof(chunk)), i;

		if (copy_from_user(chunk, ubuf + done, n))
			return -EFAULT;
		mutex_lock(&fbt_arm_lock);
		for (i = 0; i < n && !ret; i++) {
			if (chunk[i] != '\n') {
				if (s->len < FBT_LINE_MAX - 1)
					s->line[s->len++] = chunk[i];
				else
					s->overlong = true;
				continue;
			}
			s->line[s->len] = '\0';
			if (s->overlong) {
				s->bad_lines++;
			} else {
				int r = fbt_parse_line(s, s->line);

				if (r == -EINVAL)
					s->bad_lines++;
				else if (r)
					ret = r;
			}
			s->len = 0;
			s->overlong = false;
		}
		mutex_unlock(&fbt_arm_lock);
		done += n;
	}
	return ret ?: count;
}

/* Write one byte of kernel text, as arch_arm_kprobe() does (text_mutex held). */
static void fbt_poke_byte(unsigned long addr, u8 b)
{
	fbt_text_poke((void *)addr, &b, 1);
}

/* Take the armed set out of the kernel text and the ftrace ops. */
static void fbt_disarm_locked(void)
{
	struct fbt_probe *set = fbt_armed;
	unsigned int i;

	if (!set)
		return;
	if (fbt_ftrace_on) {
		unregister_ftrace_function(&fbt_ftrace_ops);
		ftrace_set_filter_ips(&fbt_ftrace_ops, NULL, 0, 0, 1);
		fbt_ftrace_on = false;
	}
	mutex_lock(fbt_text_mutex);
	for (i = 0; i < fbt_n_int3; i++)
		if (set[i].armed == FBT_ARMED_INT3)
			fbt_poke_byte(set[i].addr, set[i].saved);
	fbt_text_poke_sync();
	mutex_unlock(fbt_text_mutex);
	fbt_probes_publish(NULL, 0);
	/* no int3 handler or ftrace callback still looks at the old set */
	synchronize_rcu();
	WRITE_ONCE(fbt_armed, NULL);
	fbt_n_int3 = fbt_n_ftrace = 0;
	vfree(set);
}

void fbt_arm_exit(void)
{
	mutex_lock(&fbt_arm_lock);
	fbt_disarm_locked();
	kvfree(fbt_pol_safe);
	kvfree(fbt_pol_deny);
	kvfree(fbt_refused);
	mutex_unlock(&fbt_arm_lock);
}

static void fbt_refuse(unsigned long addr, enum fbt_refusal why)
{
	fbt_refused_count[why]++;
	if (fbt_refused)
		fbt_refused[fbt_n_refused++] = (struct fbt_refused){ addr, why };
}

static bool fbt_allowed(const struct fbt_session *s, const struct fbt_req *r)
{
	if (s->force)
		return true;
	if (r->listed)
		return r->safe;
	if (fbt_pol_has_safe)
		return fbt_in_set(fbt_pol_safe, fbt_pol_nsafe, r->addr);
	if (fbt_pol_has_deny)
		return !fbt_in_set(fbt_pol_deny, fbt_pol_ndeny, r->addr);
	return false;
}

/* Prepare the session's requests into p[] (sorted by address): int3 probes first, then ftrace. */
static unsigned int fbt_prepare_all(struct fbt_session *s, struct fbt_probe *p, u8 *slot_image,
				    unsigned int *nslots, unsigned int *nftrace)
{
	unsigned int i, n = 0, nf = 0;
	struct fbt_probe *ft = kvmalloc_array(max(s->nreq, 1u), sizeof(*ft), GFP_KERNEL);
	unsigned long prev = 0;

	if (!ft)
		return 0;
	for (i = 0; i < s->nreq; i++) {
		const struct fbt_req *r = &s->req[i];
		unsigned long addr = r->addr, slot;
		u8 bytes[FBT_MAX_INSN];
		int ret;

		if (addr == prev)
			continue;	/* listed twice */
		prev = addr;
		if (!fbt_allowed(s, r)) {
			fbt_refuse(addr, FBT_R_POLICY);
			continue;
		}
		if (!fbt_core_kernel_text(addr) || within_module(addr, THIS_MODULE)) {
			fbt_refuse(addr, FBT_R_NOTTEXT);
			continue;
		}
		if (fbt_is_copied(addr)) {
			fbt_refuse(addr, FBT_R_COPIED);
			continue;
		}
		if (copy_from_kernel_nofault(bytes, (void *)addr, sizeof(bytes))) {
			fbt_refuse(addr, FBT_R_NOTTEXT);
			continue;
		}
		if (fbt_ftrace_location(addr) == addr) {
			/* prepare the instruction as built, call __fentry__ (fbt-audit's disk variant) */
			s32 rel = (s32)((unsigned long)__fentry__ - (addr + 5));

			bytes[0] = 0xe8;
			memcpy(bytes + 1, &rel, sizeof(rel));
		} else if (bytes[0] == 0xcc) {
			fbt_refuse(addr, FBT_R_INT3);
			continue;
		}
		if (*nslots >= FBT_NR_SLOTS) {
			fbt_refuse(addr, FBT_R_SLOTS);
			continue;
		}
		slot = (unsigned long)fbt_slots + (unsigned long)*nslots * FBT_SLOT_SIZE;
		ret = fbt_probe_prepare(&p[n], addr, bytes, sizeof(bytes), slot);
		switch (ret) {
		case 0:
			if (p[n].handling == FBT_H_STEP) {
				memcpy(slot_image + (unsigned long)*nslots * FBT_SLOT_SIZE,
				       p[n].step.copy, p[n].step.copy_len);
				(*nslots)++;
			}
			p[n].saved = bytes[0];
			n++;
			break;
		case 1:
			fbt_refuse(addr, FBT_R_MOVE);
			break;
		case 2:
			if (fbt_ftrace_location(addr) != addr) {
				fbt_refuse(addr, FBT_R_FTRACE);
				break;
			}
			ft[nf] = p[n];
			ft[nf].armed = FBT_ARMED_FTRACE;
			nf++;
			break;
		case -EILSEQ:
			fbt_refuse(addr, FBT_R_DECODE);
			break;
		case -EOPNOTSUPP:
			fbt_refuse(addr, FBT_R_ENGINE);
			break;
		case -ERANGE:
			fbt_refuse(addr, FBT_R_RANGE);
			break;
		default:
			fbt_refuse(addr, FBT_R_TABLE);
			break;
		}
	}
	memcpy(p + n, ft, (size_t)nf * sizeof(*ft));
	kvfree(ft);
	*nftrace = nf;
	return n;
}

static int fbt_arm_ftrace(struct fbt_probe *ft, unsigned int nf)
{
	unsigned long *ips;
	unsigned int i;
	int ret;

	if (!nf)
		return 0;
	ips = kvmalloc_array(nf, sizeof(*ips), GFP_KERNEL);
	if (!ips)
		return -ENOMEM;
	for (i = 0; i < nf; i++)
		ips[i] = ft[i].addr;
	ret = ftrace_set_filter_ips(&fbt_ftrace_ops, ips, nf, 0, 1);
	kvfree(ips);
	if (!ret)
		ret = register_ftrace_function(&fbt_ftrace_ops);
	if (ret) {
		ftrace_set_filter_ips(&fbt_ftrace_ops, NULL, 0, 0, 1);
		return ret;
	}
	fbt_ftrace_on = true;
	return 0;
}

/* Replace the armed set with the session's requests. */
static void fbt_commit(struct fbt_session *s)
{
	unsigned int i, n, nf = 0, nslots = 0, nemu = 0, nstep = 0, refused = 0;
	struct fbt_probe *p;
	ktime_t t0, t1, t2, t3;
	u8 *image;
	int ret;

	fbt_last_requests = s->nreq;
	fbt_last_bad_lines = s->bad_lines;
	/* the policy: a list's safe rows win over a denylist */
	if (s->had_rows || s->had_deny) {
		sort(s->safe, s->nsafe, sizeof(*s->safe), fbt_cmp_ulong, NULL);
		sort(s->deny, s->ndeny, sizeof(*s->deny), fbt_cmp_ulong, NULL);
		kvfree(fbt_pol_safe);
		kvfree(fbt_pol_deny);
		fbt_pol_safe = s->safe;
		fbt_pol_nsafe = s->nsafe;
		fbt_pol_deny = s->deny;
		fbt_pol_ndeny = s->ndeny;
		fbt_pol_has_safe = s->had_rows;
		fbt_pol_has_deny = true;
		s->safe = s->deny = NULL;
	}
	if (!s->nreq && !s->disarm)
		return;
	fbt_disarm_locked();
	if (s->disarm || !s->nreq) {
		pr_info("disarmed\n");
		return;
	}
	sort(s->req, s->nreq, sizeof(*s->req), fbt_cmp_req, NULL);
	kvfree(fbt_refused);
	fbt_n_refused = 0;
	fbt_refused = kvmalloc_array(s->nreq, sizeof(*fbt_refused), GFP_KERNEL);
	p = vzalloc(array_size(s->nreq, sizeof(*p)));
	image = vmalloc(FBT_NR_SLOTS * FBT_SLOT_SIZE);
	if (!p || !image) {
		vfree(p);
		vfree(image);
		pr_err("arming: out of memory\n");
		return;
	}
	memset(image, 0xcc, FBT_NR_SLOTS * FBT_SLOT_SIZE);
	t0 = ktime_get();
	n = fbt_prepare_all(s, p, image, &nslots, &nf);
	t1 = ktime_get();
	pr_info("prepared %u int3 probes (%u slots), %u ftrace\n", n, nslots, nf);

	mutex_lock(fbt_text_mutex);
	/* the copies first, a page at a time, then the set, then the int3s */
	for (i = 0; i < nslots * FBT_SLOT_SIZE; i += PAGE_SIZE)
		fbt_text_poke(fbt_slots + i, image + i, min_t(unsigned int, PAGE_SIZE, nslots * FBT_SLOT_SIZE - i));
	fbt_text_poke_sync();
	WRITE_ONCE(fbt_n_ftrace, 0);
	fbt_n_int3 = n;
	fbt_probes_publish(p, n);
	WRITE_ONCE(fbt_armed, p);
	for (i = 0; i < n; i++) {
		p[i].armed = FBT_ARMED_INT3;
		if (trace_arm)
			pr_info("arming %pS\n", (void *)p[i].addr);
		fbt_poke_byte(p[i].addr, 0xcc);
		if (p[i].handling == FBT_H_EMULATE)
			nemu++;
		else
			nstep++;
	}
	fbt_text_poke_sync();
	mutex_unlock(fbt_text_mutex);
	vfree(image);

	t2 = ktime_get();
	pr_info("int3 probes written\n");
	smp_wmb();	/* the ftrace probes are written before the count covers them */
	WRITE_ONCE(fbt_n_ftrace, nf);
	ret = fbt_arm_ftrace(p + n, nf);
	t3 = ktime_get();
	if (ret) {
		pr_err("ftrace probes not armed (%d)\n", ret);
		for (i = 0; i < nf; i++)
			p[n + i].armed = FBT_ARMED_NONE;
	}
	for (i = 0; i < FBT_R_NR; i++)
		refused += fbt_refused_count[i];
	pr_info("armed %u probes: %u int3 (%u emulate, %u step), %u ftrace; refused %u\n",
		n + (ret ? 0 : nf), n, nemu, nstep, ret ? 0 : nf, refused);
	pr_info("arming took: prepare %lld ms, int3 %lld ms, ftrace %lld ms\n", ktime_ms_delta(t1, t0),
		ktime_ms_delta(t2, t1), ktime_ms_delta(t3, t2));
}

static int fbt_control_release(struct inode *inode, struct file *file)
{
	struct fbt_session *s = file->private_data;

	mutex_lock(&fbt_arm_lock);
	pr_info("control: %u requests, %u bad lines, parsed in %lld ms\n", s->nreq, s->bad_lines,
		ktime_ms_delta(ktime_get(), s->opened));
	if (s->len) {
		s->line[s->len] = '\0';
		if (fbt_parse_line(s, s->line) == -EINVAL)
			s->bad_lines++;
	}
	fbt_commit(s);
	mutex_unlock(&fbt_arm_lock);
	kvfree(s->req);
	kvfree(s->safe);
	kvfree(s->deny);
	kfree(s);
	return 0;
}

static const struct file_operations fbt_control_fops = {
	.owner = THIS_MODULE,
	.open = fbt_control_open,
	.write = fbt_control_write,
	.release = fbt_control_release,
	.llseek = noop_llseek,
};

/* hits: one line per armed probe: address, handling, table entry, fixups that act, hits, symbol. */
static int fbt_hits_show(struct seq_file *m, void *v)
{
	unsigned int i, n;

	mutex_lock(&fbt_arm_lock);
	seq_puts(m, "# addr\thandling\tentry\tactive_fixups\thits\tsymbol\n");
	n = fbt_armed ? fbt_n_int3 + fbt_n_ftrace : 0;
	for (i = 0; i < n; i++) {
		const struct fbt_probe *p = &fbt_armed[i];

		if (p->armed == FBT_ARMED_NONE)
			continue;
		seq_printf(m, "%lx\t%s\t%.*s\t0x%x\t%ld\t%pS\n", p->addr,
			   fbt_handling_name[p->handling],
			   p->entry ? (int)sizeof(p->entry->mnemonic) : 1,
			   p->entry ? p->entry->mnemonic : "-", p->active_fx,
			   atomic_long_read(&p->hits), (void *)p->addr);
	}
	mutex_unlock(&fbt_arm_lock);
	return 0;
}
DEFINE_SHOW_ATTRIBUTE(fbt_hits);

/* status: what the last session asked, armed and refused (counts, then each refused address). */
static int fbt_status_show(struct seq_file *m, void *v)
{
	unsigned int i;

	mutex_lock(&fbt_arm_lock);
	seq_printf(m, "table\t%.*s\n", (int)sizeof(fbt_emu_table.hdr.name), fbt_emu_table.hdr.name);
	seq_printf(m, "requests\t%u\nbad_lines\t%u\n", fbt_last_requests, fbt_last_bad_lines);
	seq_printf(m, "armed_int3\t%u\narmed_ftrace\t%u\n", fbt_armed ? fbt_n_int3 : 0,
		   fbt_armed && fbt_ftrace_on ? fbt_n_ftrace : 0);
	seq_printf(m, "slots\t%u\n", FBT_NR_SLOTS);
	for (i = 0; i < FBT_R_NR; i++)
		seq_printf(m, "refused\t%s\t%u\n", fbt_refusal_name[i], fbt_refused_count[i]);
	for (i = 0; fbt_refused && i < fbt_n_refused; i++)
		seq_printf(m, "refused_at\t%lx\t%s\t%pS\n", fbt_refused[i].addr,
			   fbt_refusal_name[fbt_refused[i].why], (void *)fbt_refused[i].addr);
	mutex_unlock(&fbt_arm_lock);
	return 0;
}
DEFINE_SHOW_ATTRIBUTE(fbt_status);

void fbt_arm_debugfs(struct dentry *dir)
{
	debugfs_create_file("control", 0200, dir, NULL, &fbt_control_fops);
	debugfs_create_file("hits", 0444, dir, NULL, &fbt_hits_fops);
	debugfs_create_file("status", 0444, dir, NULL, &fbt_status_fops);
}

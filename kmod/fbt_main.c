// SPDX-License-Identifier: GPL-2.0
/*
 * fbt_main.c: module load and unload: check the table, list it in debugfs, hook int3.
 *
 * At load fbt.ko checks its compiled-in emulation table (magic, ABI version, sizes, enums),
 * logs its name, size and sha256, lists it at /sys/kernel/debug/fbt/table in the layout of
 * `fbt-audit table fbt.ko`, runs a self-test of the engine on synthetic registers, and
 * registers the die notifier of the int3 path (fbt_probe.c). Probes are armed through
 * /sys/kernel/debug/fbt/control (fbt_arm.c) and all disarmed at unload.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <crypto/sha2.h>
#include <linux/debugfs.h>
#include <linux/fs.h>
#include <linux/init.h>
#include <linux/kernel.h>
#include <linux/mm.h>
#include <linux/module.h>
#include <linux/seq_file.h>
#include <asm/processor-flags.h>
#include <asm/segment.h>

#include "fbt_arm.h"
#include "fbt_listing.h"
#include "fbt_probe.h"

static bool selftest = true;
module_param(selftest, bool, 0444);
MODULE_PARM_DESC(selftest, "run the engine self-test at load (default: yes)");

static char fbt_sha256[SHA256_DIGEST_SIZE * 2 + 1];
static struct dentry *fbt_debugfs;

static int fbt_table_show(struct seq_file *m, void *v)
{
	const struct fbt_emu_table *t = &fbt_emu_table;
	unsigned long n = fbt_format_table(t, "fbt.ko", fbt_sha256, NULL, 0);
	char *buf = kvmalloc(n + 1, GFP_KERNEL);

	if (!buf)
		return -ENOMEM;
	fbt_format_table(t, "fbt.ko", fbt_sha256, buf, n + 1);
	seq_write(m, buf, n);
	kvfree(buf);
	return 0;
}
DEFINE_SHOW_ATTRIBUTE(fbt_table);

/*
 * The pinned seed: PUSHF emulated while the handler runs with IF masked and TF set must push
 * the interrupted context's IF, and leave that IF in the flags the context resumes with.
 */
static int fbt_selftest(void)
{
	static const u8 pushf = 0x9c;
	u64 stack[4] = { 0, 0, 0, 0 };
	u64 saved = X86_EFLAGS_FIXED | X86_EFLAGS_IF | X86_EFLAGS_ZF;
	u64 live = (saved & ~X86_EFLAGS_IF) | X86_EFLAGS_TF;
	struct fbt_regs r = { .ip = 0x1000, .flags = saved, .cs = __KERNEL_CS };
	struct fbt_insn insn;

	if (fbt_emu_table.hdr.emu_flags != FBT_EMU_SAVED)
		return 0;	/* a LIVE table reproduces the bug on purpose */
	r.gpr[FBT_RSP] = (unsigned long)&stack[2];
	if (fbt_decode(&insn, &pushf, 1) != 1 ||
	    fbt_emulate(&insn, &fbt_emu_table.hdr, &r, &live) ||
	    stack[1] != saved || r.flags != saved || r.ip != 0x1001 ||
	    r.gpr[FBT_RSP] != (unsigned long)&stack[1])
		return -EINVAL;
	return 0;
}

static int __init fbt_init(void)
{
	const struct fbt_emu_header *h = &fbt_emu_table.hdr;
	u8 digest[SHA256_DIGEST_SIZE];
	int ret;

	if (fbt_table_check(&fbt_emu_table, fbt_table_size())) {
		pr_err("emulation table fails its ABI check\n");
		return -EINVAL;
	}
	sha256((const u8 *)&fbt_emu_table, fbt_table_size(), digest);
	bin2hex(fbt_sha256, digest, sizeof(digest));
	pr_info("table %.*s: %u entries, %lu bytes, sha256 %s\n", (int)sizeof(h->name), h->name,
		h->count, fbt_table_size(), fbt_sha256);

	if (selftest) {
		ret = fbt_selftest();
		pr_info("self-test: %s\n", ret ? "FAILED" : "ok");
		if (ret)
			return ret;
	}

	ret = fbt_arm_init();
	if (ret)
		return ret;
	fbt_debugfs = debugfs_create_dir("fbt", NULL);
	debugfs_create_file("table", 0444, fbt_debugfs, NULL, &fbt_table_fops);
	fbt_arm_debugfs(fbt_debugfs);

	ret = fbt_int3_init();
	if (ret) {
		debugfs_remove(fbt_debugfs);
		return ret;
	}
	return 0;
}

static void __exit fbt_exit(void)
{
	debugfs_remove(fbt_debugfs);
	fbt_arm_exit();
	fbt_int3_exit();
}

module_init(fbt_init);
module_exit(fbt_exit);

MODULE_DESCRIPTION("FBT probes whose int3 handler follows the fbt-audit emulation table");
MODULE_LICENSE("GPL");

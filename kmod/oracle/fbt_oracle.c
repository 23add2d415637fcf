// SPDX-License-Identifier: GPL-2.0
/*
 * fbt_oracle.c: ask kprobes itself which addresses it accepts (the oracle of `fbt-audit verify --oracle`).
 *
 * Write lines "<hex address> [type] [name]" (the layout of /proc/kallsyms; type and name are only
 * echoed) to /sys/kernel/debug/fbt_oracle/control. For each address the module calls
 * register_kprobe() on a kprobe with KPROBE_FLAG_DISABLED (never armed: no int3 is written, so any
 * address is harmless to ask about) and records 0 or the errno, with the address kprobes settled on
 * (kp.addr after arch_adjust_kprobe_addr: sym+4 past an ENDBR). Accepted probes are unregistered
 * in batches of BATCH with unregister_kprobes(), one synchronize_rcu() per batch instead of one per
 * probe; a registered, disabled probe changes nothing the next registration checks (can_probe
 * recovers the original bytes under it, and it is never armed or optimized).
 *
 * /sys/kernel/debug/fbt_oracle/results: one line per address asked, in order:
 *     <hex address>\t<errno, 0 = accepted>\t<hex address probed>\t<name>
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/debugfs.h>
#include <linux/fs.h>
#include <linux/kernel.h>
#include <linux/kprobes.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/slab.h>
#include <linux/uaccess.h>
#include <linux/vmalloc.h>

#define BATCH		128
#define RESULTS_SIZE	(32UL << 20)	/* ~60 bytes a line; 6.12 has ~100,000 text symbols */
#define LINE_MAX_LEN	640		/* KSYM_NAME_LEN is 512 from 6.1 on */

static struct dentry *oracle_dir;
static DEFINE_MUTEX(oracle_lock);
static char *results;		/* vmalloc'd text, RESULTS_SIZE bytes */
static size_t results_len;
static unsigned long asked, accepted;
static char carry[LINE_MAX_LEN];	/* a line split across two writes */
static size_t carry_len;
static struct kprobe *batch[BATCH];
static int batch_n;

static void flush_batch(void)
{
	int i;

	if (!batch_n)
		return;
	unregister_kprobes(batch, batch_n);
	for (i = 0; i < batch_n; i++)
		kfree(batch[i]);
	batch_n = 0;
}

static void ask(char *line)
{
	char *name = line, *tok, *last = "";
	unsigned long addr;
	struct kprobe *kp;
	int ret;

	tok = strsep(&name, " \t");
	if (!tok || !*tok || kstrtoul(tok, 16, &addr))
		return;
	while (name && (tok = strsep(&name, " \t")))
		if (*tok)
			last = tok;
	kp = kzalloc(sizeof(*kp), GFP_KERNEL);
	if (!kp) {
		ret = -ENOMEM;
	} else {
		kp->addr = (kprobe_opcode_t *)addr;
		kp->flags = KPROBE_FLAG_DISABLED;
		ret = register_kprobe(kp);
	}
	if (results_len + LINE_MAX_LEN + 64 < RESULTS_SIZE)
		results_len += scnprintf(results + results_len, RESULTS_SIZE - results_len, "%lx\t%d\t%lx\t%s\n",
					 addr, -ret, ret || !kp ? 0UL : (unsigned long)kp->addr, last);
	asked++;
	if (ret) {
		kfree(kp);
		return;
	}
	accepted++;
	batch[batch_n++] = kp;
	if (batch_n == BATCH)
		flush_batch();
	if (asked % 5000 == 0)
		pr_info("asked %lu, accepted %lu\n", asked, accepted);
}

static ssize_t control_write(struct file *f, const char __user *ubuf, size_t len, loff_t *ppos)
{
	char *buf, *p, *nl;
	size_t n;

	buf = kvmalloc(len + LINE_MAX_LEN + 1, GFP_KERNEL);
	if (!buf)
		return -ENOMEM;
	mutex_lock(&oracle_lock);
	memcpy(buf, carry, carry_len);
	if (copy_from_user(buf + carry_len, ubuf, len)) {
		mutex_unlock(&oracle_lock);
		kvfree(buf);
		return -EFAULT;
	}
	n = carry_len + len;
	buf[n] = 0;
	p = buf;
	while ((nl = strchr(p, '\n'))) {
		*nl = 0;
		ask(p);
		p = nl + 1;
		cond_resched();
	}
	carry_len = min_t(size_t, strlen(p), LINE_MAX_LEN - 1);
	memcpy(carry, p, carry_len);
	flush_batch();
	mutex_unlock(&oracle_lock);
	kvfree(buf);
	return len;
}

static int control_release(struct inode *inode, struct file *f)
{
	mutex_lock(&oracle_lock);
	if (carry_len) {	/* a last line without its newline */
		carry[carry_len] = 0;
		ask(carry);
		carry_len = 0;
		flush_batch();
	}
	pr_info("done: asked %lu, accepted %lu\n", asked, accepted);
	mutex_unlock(&oracle_lock);
	return 0;
}

static ssize_t results_read(struct file *f, char __user *ubuf, size_t len, loff_t *ppos)
{
	ssize_t ret;

	mutex_lock(&oracle_lock);
	ret = simple_read_from_buffer(ubuf, len, ppos, results, results_len);
	mutex_unlock(&oracle_lock);
	return ret;
}

static const struct file_operations control_fops = {
	.owner = THIS_MODULE,
	.write = control_write,
	.release = control_release,
};

static const struct file_operations results_fops = {
	.owner = THIS_MODULE,
	.read = results_read,
};

static int __init oracle_init(void)
{
	results = vmalloc(RESULTS_SIZE);
	if (!results)
		return -ENOMEM;
	oracle_dir = debugfs_create_dir("fbt_oracle", NULL);
	debugfs_create_file("control", 0200, oracle_dir, NULL, &control_fops);
	debugfs_create_file("results", 0400, oracle_dir, NULL, &results_fops);
	pr_info("ready\n");
	return 0;
}

static void __exit oracle_exit(void)
{
	debugfs_remove_recursive(oracle_dir);
	flush_batch();
	vfree(results);
}

module_init(oracle_init);
module_exit(oracle_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("fbt-audit: which addresses register_kprobe() accepts (disabled probes, then unregistered)");

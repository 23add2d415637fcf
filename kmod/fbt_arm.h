/* SPDX-License-Identifier: GPL-2.0 */
/*
 * fbt_arm.h: arming probes in live kernel text (text_poke, ftrace) and the debugfs control file.
 */
#ifndef FBT_ARM_H
#define FBT_ARM_H

struct dentry;

int fbt_arm_init(void);
void fbt_arm_debugfs(struct dentry *dir);
void fbt_arm_exit(void);

#endif /* FBT_ARM_H */

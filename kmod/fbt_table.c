// SPDX-License-Identifier: GPL-2.0
/*
 * fbt_table.c: the one emulation table fbt.ko compiles in: fbt_emu_table, in .fbt_emu_table.
 *
 * tables/reference.c by default; tables/legacy-2011.c with -DFBT_LEGACY_2011 (make
 * FBT_LEGACY_2011=1), to reproduce dtrace4linux's 2011 handling from a real build. The
 * bytes in the section are exactly what scripts/build-tables ships as audit/table/named/<name>.fbt,
 * and fbt-audit reads them back from the built fbt.ko (tests/test_kmod_build.py).
 */
#ifdef FBT_LEGACY_2011
#include "tables/legacy-2011.c"
#else
#include "tables/reference.c"
#endif

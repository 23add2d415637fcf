// SPDX-License-Identifier: GPL-2.0
/*
 * fbt_engine.c: decode, table lookup, emulation on saved registers, and out-of-line steps.
 *
 * Plain C, no kernel-only calls: built into fbt.ko and, for tests, into a userspace library
 * (tests/test_kmod_engine.py runs every emulation against the CPU). See fbt_engine.h.
 *
 * Build with -DFBT_BREAK_PUSHF_REPAIR for a deliberately broken engine: PUSHF emulation
 * pushes the handler's live flags and a stepped PUSHF is not repaired, as dtrace4linux did
 * before aa60b7f. The differential tests must fail against that build.
 */
#include "fbt_engine.h"

#define FBT_MODRM_MOD(m)	((m) >> 6)
#define FBT_MODRM_REG(m)	(((m) >> 3) & 7)
#define FBT_MODRM_RM(m)		((m) & 7)
#define FBT_REX_W(r)		(((r) >> 3) & 1)
#define FBT_REX_R(r)		(((r) >> 2) & 1)
#define FBT_REX_B(r)		((r) & 1)

#define FBT_INT3		0xcc

/* ------------------------------------------------------------------------------------------ */
/* Decoding: length, prefixes, ModRM, displacement and immediate (Intel SDM Vol. 2, App. A). */

static int fbt_legacy_prefix(__u8 b)
{
	switch (b) {
	case 0x66:
		return FBT_P_66;
	case 0x67:
		return FBT_P_67;
	case 0xf0:
		return FBT_P_F0;
	case 0xf2:
		return FBT_P_F2;
	case 0xf3:
		return FBT_P_F3;
	case 0x26: case 0x2e: case 0x36: case 0x3e:
		return FBT_P_SEG;
	case 0x64:
		return FBT_P_FS;
	case 0x65:
		return FBT_P_GS;
	}
	return 0;
}

/* One-byte opcodes that are invalid in 64-bit mode ("i64"); 62 is EVEX there, not BOUND. */
static int fbt_invalid_1b(__u8 op)
{
	switch (op) {
	case 0x06: case 0x07: case 0x0e: case 0x16: case 0x17: case 0x1e: case 0x1f:
	case 0x27: case 0x2f: case 0x37: case 0x3f: case 0x60: case 0x61: case 0x82:
	case 0x9a: case 0xce: case 0xd4: case 0xd5: case 0xd6: case 0xea:
		return 1;
	}
	return 0;
}

static int fbt_modrm_1b(__u8 op)
{
	if (op < 0x40)
		return (op & 7) < 4;
	switch (op) {
	case 0x63: case 0x69: case 0x6b:
	case 0x80 ... 0x8f:
	case 0xc0: case 0xc1: case 0xc6: case 0xc7:
	case 0xd0 ... 0xd3:
	case 0xd8 ... 0xdf:
	case 0xf6: case 0xf7: case 0xfe: case 0xff:
		return 1;
	}
	return 0;
}

/* Immediate bytes of a one-byte opcode; z is the Iz size (2 with 66 and no REX.W, else 4). */
static int fbt_imm_1b(const struct fbt_insn *in, __u8 op, int modrm, int z)
{
	if (op < 0x40)
		return (op & 7) == 4 ? 1 : (op & 7) == 5 ? z : 0;
	switch (op) {
	case 0x68: case 0x69: case 0x81: case 0xa9: case 0xc7:
		return z;
	case 0x6a: case 0x6b: case 0x70 ... 0x7f: case 0x80: case 0x83: case 0xa8:
	case 0xb0 ... 0xb7: case 0xc0: case 0xc1: case 0xc6: case 0xcd:
	case 0xe0 ... 0xe7: case 0xeb:
		return 1;
	case 0xa0 ... 0xa3:				/* moffs */
		return (in->pfx & FBT_P_67) ? 4 : 8;
	case 0xb8 ... 0xbf:				/* mov $imm, reg: Iv */
		return FBT_REX_W(in->rex) ? 8 : z;
	case 0xc2: case 0xca:
		return 2;
	case 0xc8:					/* enter $imm16, $imm8 */
		return 3;
	case 0xe8: case 0xe9:				/* Jz, forced to 64-bit: always rel32 */
		return 4;
	case 0xf6:
		return FBT_MODRM_REG(modrm) < 2 ? 1 : 0;
	case 0xf7:
		return FBT_MODRM_REG(modrm) < 2 ? z : 0;
	}
	return 0;
}

static int fbt_invalid_0f(__u8 op)
{
	switch (op) {
	case 0x04: case 0x0a: case 0x0c: case 0x24 ... 0x27: case 0x36: case 0x39:
	case 0x3b ... 0x3f: case 0x7a: case 0x7b:
		return 1;
	}
	return 0;
}

static int fbt_modrm_0f(__u8 op)
{
	switch (op) {
	case 0x05 ... 0x09: case 0x0b: case 0x0e: case 0x30 ... 0x35: case 0x37: case 0x77:
	case 0x80 ... 0x8f: case 0xa0 ... 0xa2: case 0xa8 ... 0xaa: case 0xc8 ... 0xcf:
		return 0;
	}
	return 1;
}

static int fbt_imm_0f(const struct fbt_insn *in, __u8 op)
{
	switch (op) {
	case 0x0f:					/* 3DNow!: the opcode is a suffix byte */
	case 0x70 ... 0x73: case 0xa4: case 0xac: case 0xba: case 0xc2: case 0xc4 ... 0xc6:
		return 1;
	case 0x78:					/* SSE4a extrq/insertq: ib, ib */
		return (in->pfx & (FBT_P_66 | FBT_P_F2)) ? 2 : 0;
	case 0x80 ... 0x8f:
		return 4;
	}
	return 0;
}

/* VEX (c4, c5) and EVEX (62): the opcode map comes from the payload; ModRM nearly always. */
static int fbt_decode_vex(struct fbt_insn *in, const __u8 *b, unsigned int i, unsigned int n,
			  int *modrm, int *imm)
{
	__u8 lead = b[i];
	unsigned int payload = lead == 0xc5 ? 1 : lead == 0xc4 ? 2 : 3;
	__u8 map;

	if (i + payload + 1 >= n)
		return -FBT_EBADINSN;
	if (lead == 0xc5)
		map = 1;
	else if (lead == 0xc4)
		map = b[i + 1] & 0x1f;
	else
		map = b[i + 1] & 0x07;
	if (map < 1 || (map > 3 && !(lead == 0x62 && (map == 5 || map == 6))))
		return -FBT_EBADINSN;
	in->vex = lead;
	in->opcode[0] = lead;
	in->opcode_len = 1;
	in->map = map;
	in->op = b[i + payload + 1];
	*modrm = !(lead != 0x62 && map == 1 && in->op == 0x77);	/* vzeroupper, vzeroall */
	if (map == 3)
		*imm = 1;
	else if (map == 1 && ((in->op >= 0x70 && in->op <= 0x73) || in->op == 0xc2 ||
			      (in->op >= 0xc4 && in->op <= 0xc6)))
		*imm = 1;
	else
		*imm = 0;
	return i + payload + 2;
}

/*
 * Decode the instruction at buf (at most avail bytes). Returns its length, or -FBT_EBADINSN.
 * The model of prefixes and opcode bytes is fbt-audit's (see struct fbt_insn).
 */
int fbt_decode(struct fbt_insn *in, const void *buf, unsigned int avail)
{
	const __u8 *b = buf;
	unsigned int n = avail < FBT_MAX_INSN ? avail : FBT_MAX_INSN;
	unsigned int i = 0;
	int has_modrm = 0, imm = 0, bit, z;
	__u8 op, modrm = 0;

	__builtin_memset(in, 0, sizeof(*in));
	in->modrm_off = -1;
	in->disp_off = -1;
	in->imm_off = -1;

	while (i < n && (bit = fbt_legacy_prefix(b[i])) != 0) {
		in->prefix[in->nprefix++] = b[i++];
		in->pfx |= bit;
	}
	if (i < n && (b[i] & 0xf0) == 0x40)
		in->rex = b[i++];
	if (i >= n)
		return -FBT_EBADINSN;
	/* A REX must come last: REX then a prefix or another REX is refused, not guessed at. */
	if (in->rex && (fbt_legacy_prefix(b[i]) || (b[i] & 0xf0) == 0x40))
		return -FBT_EBADINSN;
	z = ((in->pfx & FBT_P_66) && !FBT_REX_W(in->rex)) ? 2 : 4;

	op = b[i];
	if (op == 0xc4 || op == 0xc5 || op == 0x62) {
		int next = fbt_decode_vex(in, b, i, n, &has_modrm, &imm);

		if (next < 0)
			return next;
		i = next;
	} else if (op == 0x0f) {
		if (i + 1 >= n)
			return -FBT_EBADINSN;
		in->opcode[0] = 0x0f;
		in->opcode[1] = b[i + 1];
		if (b[i + 1] == 0x38 || b[i + 1] == 0x3a) {
			if (i + 2 >= n)
				return -FBT_EBADINSN;
			in->opcode[2] = b[i + 2];
			in->opcode_len = 3;
			in->map = b[i + 1] == 0x38 ? 2 : 3;
			in->op = b[i + 2];
			has_modrm = 1;
			imm = in->map == 3;
			i += 3;
		} else {
			in->opcode_len = 2;
			in->map = 1;
			in->op = b[i + 1];
			if (fbt_invalid_0f(in->op))
				return -FBT_EBADINSN;
			has_modrm = fbt_modrm_0f(in->op);
			imm = fbt_imm_0f(in, in->op);
			i += 2;
		}
	} else {
		in->opcode[0] = op;
		in->opcode_len = 1;
		in->map = 0;
		in->op = op;
		if (fbt_invalid_1b(op))
			return -FBT_EBADINSN;
		has_modrm = fbt_modrm_1b(op);
		i += 1;
	}

	if (has_modrm) {
		int disp = 0;

		if (i >= n)
			return -FBT_EBADINSN;
		modrm = b[i];
		in->modrm_off = i++;
		/* mov to/from CR and DR: the operand is a register whatever mod says */
		if (!in->vex && in->map == 1 && in->op >= 0x20 && in->op <= 0x23)
			modrm |= 0xc0;
		if (FBT_MODRM_MOD(modrm) != 3 && FBT_MODRM_RM(modrm) == 4) {
			if (i >= n)
				return -FBT_EBADINSN;
			if (FBT_MODRM_MOD(modrm) == 0 && (b[i] & 7) == 5)
				disp = 4;		/* SIB without base: disp32 */
			i++;
		}
		if (FBT_MODRM_MOD(modrm) == 1)
			disp = 1;
		else if (FBT_MODRM_MOD(modrm) == 2)
			disp = 4;
		else if (FBT_MODRM_MOD(modrm) == 0 && FBT_MODRM_RM(modrm) == 5)
			disp = 4;			/* disp32(%rip) */
		if (disp) {
			in->disp_off = i;
			in->disp_len = disp;
			i += disp;
		}
	}
	if (!in->vex && in->map == 0)
		imm = fbt_imm_1b(in, op, modrm, z);
	if (imm) {
		in->imm_off = i;
		in->imm_len = imm;
		i += imm;
	}
	if (i > n)
		return -FBT_EBADINSN;
	in->len = i;
	__builtin_memcpy(in->bytes, b, i);
	return i;
}

static int fbt_rip_relative(const struct fbt_insn *in)
{
	return in->modrm_off >= 0 && (in->bytes[in->modrm_off] & 0xc7) == 0x05;
}

static __s32 fbt_le32(const __u8 *p)
{
	return (__s32)((__u32)p[0] | (__u32)p[1] << 8 | (__u32)p[2] << 16 | (__u32)p[3] << 24);
}

static __s64 fbt_imm(const struct fbt_insn *in)
{
	const __u8 *p = in->bytes + in->imm_off;

	switch (in->imm_len) {
	case 1:
		return (__s8)p[0];
	case 2:
		return (__s16)(p[0] | p[1] << 8);
	case 4:
		return fbt_le32(p);
	}
	return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* The table: validation and the first-match lookup of DESIGN.md "Matching". */

int fbt_table_check(const struct fbt_emu_table *t, unsigned long size)
{
	static const char magic[8] = { 'F', 'B', 'T', 'E', 'M', 'U', 'T', 'B' };
	const struct fbt_emu_header *h = &t->hdr;
	unsigned int i;

	if (size < sizeof(*h) || __builtin_memcmp(h->magic, magic, sizeof(magic)))
		return -FBT_EBADINSN;
	if (h->abi_version != FBT_EMU_ABI_VERSION || h->header_size != sizeof(*h) ||
	    h->entry_size != sizeof(struct fbt_emu_entry))
		return -FBT_EBADINSN;
	if (size != sizeof(*h) + (unsigned long)h->count * sizeof(struct fbt_emu_entry))
		return -FBT_EBADINSN;
	if (h->default_handling > FBT_H_FTRACE ||
	    h->step_mechanism < FBT_STEP_TF || h->step_mechanism > FBT_STEP_INT3 ||
	    h->step_if < FBT_IF_MASKED || h->step_if > FBT_IF_PRESERVED ||
	    h->emu_flags < FBT_EMU_SAVED || h->emu_flags > FBT_EMU_LIVE)
		return -FBT_EBADINSN;
	for (i = 0; i < h->count; i++) {
		const struct fbt_emu_entry *e = &t->entries[i];

		if (e->opcode_len < 1 || e->opcode_len > 3 || e->handling == FBT_H_NONE ||
		    e->handling > FBT_H_FTRACE || e->target > FBT_T_INDIRECT_THUNK)
			return -FBT_EBADINSN;
	}
	return 0;
}

static int fbt_has_prefix(const struct fbt_insn *in, __u8 p)
{
	unsigned int i;

	for (i = 0; i < in->nprefix; i++)
		if (in->prefix[i] == p)
			return 1;
	return 0;
}

static int fbt_entry_prefix(const struct fbt_emu_entry *e, __u8 p)
{
	unsigned int i;

	for (i = 0; i < sizeof(e->prefix); i++)
		if (e->prefix[i] && e->prefix[i] == p)
			return 1;
	return 0;
}

static int fbt_matches(const struct fbt_emu_entry *e, const struct fbt_insn *in)
{
	unsigned int n = e->opcode_len, i;

	if (in->opcode_len != n)
		return 0;
	for (i = 0; i + 1 < n; i++)
		if (in->opcode[i] != e->opcode[i])
			return 0;
	if ((in->opcode[n - 1] & e->opcode_mask) != (e->opcode[n - 1] & e->opcode_mask))
		return 0;
	if ((in->rex & e->rex_mask) != e->rex_value)
		return 0;
	for (i = 0; i < sizeof(e->prefix); i++)
		if (e->prefix[i] && !fbt_has_prefix(in, e->prefix[i]))
			return 0;
	if (e->match_flags & FBT_M_EXACT_PREFIX)
		for (i = 0; i < in->nprefix; i++)
			if (!fbt_entry_prefix(e, in->prefix[i]))
				return 0;
	if (e->modrm_mask) {
		if (in->modrm_off < 0)
			return 0;
		if ((in->bytes[in->modrm_off] & e->modrm_mask) != e->modrm_value)
			return 0;
	}
	if (e->target != FBT_T_ANY && in->target_class != e->target)
		return 0;
	return 1;
}

/* The first entry that matches, or NULL. */
const struct fbt_emu_entry *fbt_lookup(const struct fbt_emu_table *t, const struct fbt_insn *in)
{
	unsigned int i;

	for (i = 0; i < t->hdr.count; i++)
		if (fbt_matches(&t->entries[i], in))
			return &t->entries[i];
	return (const struct fbt_emu_entry *)0;
}

/*
 * Handling and fixups as DESIGN.md "How a site is judged" derives them: the entry's, plus the
 * header's step_fixups for a step (unless FBT_M_OWN_FIXUPS); the header's default otherwise.
 */
int fbt_effective(const struct fbt_emu_table *t, const struct fbt_insn *in,
		  const struct fbt_emu_entry **entry, __u32 *fixups)
{
	const struct fbt_emu_entry *e = fbt_lookup(t, in);
	int h;

	if (entry)
		*entry = e;
	if (!e) {
		h = t->hdr.default_handling;
		*fixups = h == FBT_H_STEP ? t->hdr.step_fixups : 0;
		return h;
	}
	h = e->handling;
	*fixups = e->fixups;
	if (h == FBT_H_STEP && !(e->match_flags & FBT_M_OWN_FIXUPS))
		*fixups |= t->hdr.step_fixups;
	return h;
}

/* ------------------------------------------------------------------------------------------ */
/* Emulation on the saved registers. */

static __u64 fbt_rd64(__u64 addr)
{
	__u64 v;

	__builtin_memcpy(&v, (const void *)(unsigned long)addr, sizeof(v));
	return v;
}

static __u32 fbt_rd32(__u64 addr)
{
	__u32 v;

	__builtin_memcpy(&v, (const void *)(unsigned long)addr, sizeof(v));
	return v;
}

static void fbt_wr64(__u64 addr, __u64 v)
{
	__builtin_memcpy((void *)(unsigned long)addr, &v, sizeof(v));
}

static void fbt_push(struct fbt_regs *r, __u64 v)
{
	r->gpr[FBT_RSP] -= 8;
	fbt_wr64(r->gpr[FBT_RSP], v);
}

static __u64 fbt_pop(struct fbt_regs *r)
{
	__u64 v = fbt_rd64(r->gpr[FBT_RSP]);

	r->gpr[FBT_RSP] += 8;
	return v;
}

/* Jcc condition tttn (Intel SDM Vol. 1, B.1.4.7). */
static int fbt_cond(__u64 fl, unsigned int cc)
{
	int of = !!(fl & FBT_FL_OF), sf = !!(fl & FBT_FL_SF), zf = !!(fl & FBT_FL_ZF);
	int cf = !!(fl & FBT_FL_CF), pf = !!(fl & FBT_FL_PF);
	int t;

	switch (cc >> 1) {
	case 0:				/* o */
		t = of;
		break;
	case 1:				/* b, c */
		t = cf;
		break;
	case 2:				/* e, z */
		t = zf;
		break;
	case 3:				/* be */
		t = cf || zf;
		break;
	case 4:				/* s */
		t = sf;
		break;
	case 5:				/* p */
		t = pf;
		break;
	case 6:				/* l */
		t = sf != of;
		break;
	default:			/* le */
		t = zf || sf != of;
		break;
	}
	return (cc & 1) ? !t : t;
}

/*
 * POPF in 64-bit mode (Intel SDM Vol. 2B, POPF): RF is cleared; VM, VIF, VIP and the reserved
 * bits keep their values; IOPL changes only at CPL 0; IF only when CPL <= IOPL.
 */
static __u64 fbt_popf_value(__u64 old, __u64 popped, unsigned int cpl)
{
	__u64 m = FBT_FL_CF | FBT_FL_PF | FBT_FL_AF | FBT_FL_ZF | FBT_FL_SF | FBT_FL_TF |
		  FBT_FL_IF | FBT_FL_DF | FBT_FL_OF | FBT_FL_IOPL | FBT_FL_NT | FBT_FL_AC |
		  FBT_FL_ID;
	unsigned int iopl = (old & FBT_FL_IOPL) >> 12;

	if (cpl > 0)
		m &= ~FBT_FL_IOPL;
	if (cpl > iopl)
		m &= ~FBT_FL_IF;
	return ((old & ~m) | (popped & m)) & ~FBT_FL_RF;
}

/* The flags image PUSHF stores: "VM and RF are cleared in the image stored on the stack". */
static __u64 fbt_pushf_value(__u64 fl)
{
	return fl & ~(FBT_FL_RF | FBT_FL_VM);
}

/* Push/pop of a register, mov between registers, NOPs, ENDBR. */
static int fbt_emulate_plain(const struct fbt_insn *in, struct fbt_regs *r, __u64 next)
{
	unsigned int reg, rm;
	__u8 modrm = in->modrm_off >= 0 ? in->bytes[in->modrm_off] : 0;

	if (in->map == 1 && in->op == 0x1f && FBT_MODRM_REG(modrm) == 0) {
		r->ip = next;				/* nopl/nopw r/m: the operand is not read */
		return 0;
	}
	if (in->map == 1 && in->op == 0x1e && (in->pfx & FBT_P_F3) &&
	    (modrm == 0xfa || modrm == 0xfb)) {
		r->ip = next;				/* endbr64, endbr32 */
		return 0;
	}
	if (in->map != 0)
		return -FBT_ENOTSUPP;
	switch (in->op) {
	case 0x50 ... 0x57:				/* push %reg */
		if (in->pfx & FBT_P_66)
			return -FBT_ENOTSUPP;
		reg = (in->op & 7) | FBT_REX_B(in->rex) << 3;
		fbt_push(r, r->gpr[reg]);		/* push %rsp pushes the old value */
		break;
	case 0x58 ... 0x5f:				/* pop %reg */
		if (in->pfx & FBT_P_66)
			return -FBT_ENOTSUPP;
		reg = (in->op & 7) | FBT_REX_B(in->rex) << 3;
		r->gpr[reg] = fbt_pop(r);		/* pop %rsp: the popped value wins */
		break;
	case 0x89:					/* mov %reg, %rm */
	case 0x8b:					/* mov %rm, %reg */
		if (FBT_MODRM_MOD(modrm) != 3 || (in->pfx & FBT_P_66))
			return -FBT_ENOTSUPP;
		reg = FBT_MODRM_REG(modrm) | FBT_REX_R(in->rex) << 3;
		rm = FBT_MODRM_RM(modrm) | FBT_REX_B(in->rex) << 3;
		if (in->op == 0x8b) {
			unsigned int t = reg;

			reg = rm;
			rm = t;
		}
		/* now rm is the destination and reg the source; a 32-bit move zero-extends */
		r->gpr[rm] = FBT_REX_W(in->rex) ? r->gpr[reg] : (__u32)r->gpr[reg];
		break;
	case 0x90:					/* nop; with REX.B it is xchg %r8 */
		if (FBT_REX_B(in->rex) || (in->pfx & (FBT_P_F2 | FBT_P_F3)))
			return -FBT_ENOTSUPP;
		break;
	default:
		return -FBT_ENOTSUPP;
	}
	r->ip = next;
	return 0;
}

/* ret, ret $imm16, lret (same selector only), call/jmp rel, Jcc, loop/jrcxz, call/jmp *%reg. */
static int fbt_emulate_branch(const struct fbt_insn *in, struct fbt_regs *r, __u64 next)
{
	__u8 op = in->op;
	__u8 modrm = in->modrm_off >= 0 ? in->bytes[in->modrm_off] : 0;
	__u64 target, sp, cs;
	int w64, cond;

	/*
	 * 66 makes these 16-bit, and AMD and Intel disagree on what that means: refuse it.
	 * 67 changes only what addresses memory: the count of loop/jrcxz, nothing for a
	 * register operand (ff /2, ff /4 with mod=3). Elsewhere it is refused.
	 */
	if (in->pfx & (FBT_P_66 | FBT_P_F0))
		return -FBT_ENOTSUPP;
	if ((in->pfx & FBT_P_67) && !(in->map == 0 && op >= 0xe0 && op <= 0xe3) &&
	    !(in->map == 0 && op == 0xff && FBT_MODRM_MOD(modrm) == 3))
		return -FBT_ENOTSUPP;

	if (in->map == 1) {				/* 0f 80..8f: Jcc rel32 */
		r->ip = next + (fbt_cond(r->flags, op & 0xf) ? fbt_imm(in) : 0);
		return 0;
	}
	switch (op) {
	case 0xc3:
		r->ip = fbt_pop(r);
		return 0;
	case 0xc2:
		target = fbt_pop(r);
		r->gpr[FBT_RSP] += (__u16)fbt_imm(in);
		r->ip = target;
		return 0;
	case 0xca:
	case 0xcb:
		/*
		 * A far return to the same selector: IP, then the CS slot (32-bit operands by
		 * default, 64-bit with REX.W), then the immediate. Anything else changes CS or
		 * privilege, which needs descriptor checks this engine does not do.
		 */
		w64 = FBT_REX_W(in->rex);
		sp = r->gpr[FBT_RSP];
		target = w64 ? fbt_rd64(sp) : fbt_rd32(sp);
		cs = (w64 ? fbt_rd64(sp + 8) : fbt_rd32(sp + 4)) & 0xffff;
		if (cs != (r->cs & 0xffff))
			return -FBT_ENOTSUPP;
		r->gpr[FBT_RSP] = sp + (w64 ? 16 : 8) + (op == 0xca ? (__u16)fbt_imm(in) : 0);
		r->ip = target;
		return 0;
	case 0xe8:
		fbt_push(r, next);
		r->ip = next + fbt_imm(in);
		return 0;
	case 0xe9:
	case 0xeb:
		r->ip = next + fbt_imm(in);
		return 0;
	case 0x70 ... 0x7f:
		r->ip = next + (fbt_cond(r->flags, op & 0xf) ? fbt_imm(in) : 0);
		return 0;
	case 0xe0 ... 0xe3:
		/*
		 * loopne, loope, loop, jrcxz. With 67 the count is ECX, and writing it clears the
		 * upper half of RCX like any 32-bit register write (the CPU does so; kprobes'
		 * kprobe_emulate_loop decrements the low half in place and keeps the upper one).
		 */
		if (in->pfx & FBT_P_67) {
			__u32 ecx = (__u32)r->gpr[FBT_RCX];

			if (op == 0xe3) {
				cond = ecx == 0;
			} else {
				r->gpr[FBT_RCX] = --ecx;
				cond = ecx != 0;
			}
		} else if (op == 0xe3) {
			cond = r->gpr[FBT_RCX] == 0;
		} else {
			cond = --r->gpr[FBT_RCX] != 0;
		}
		if (op == 0xe0)
			cond = cond && !(r->flags & FBT_FL_ZF);
		else if (op == 0xe1)
			cond = cond && (r->flags & FBT_FL_ZF);
		r->ip = next + (cond ? fbt_imm(in) : 0);
		return 0;
	case 0xff:
		if (FBT_MODRM_MOD(modrm) != 3)
			return -FBT_ENOTSUPP;		/* memory forms are stepped, not emulated */
		target = r->gpr[FBT_MODRM_RM(modrm) | FBT_REX_B(in->rex) << 3];
		if (FBT_MODRM_REG(modrm) == 2)
			fbt_push(r, next);		/* the target was read first: call *%rsp */
		else if (FBT_MODRM_REG(modrm) != 4)
			return -FBT_ENOTSUPP;
		r->ip = target;
		return 0;
	}
	return -FBT_ENOTSUPP;
}

/* CLI, STI, PUSHF, POPF on the flags the header names (FBT_EMU_SAVED or FBT_EMU_LIVE). */
static int fbt_emulate_flags(const struct fbt_insn *in, const struct fbt_emu_header *hdr,
			     struct fbt_regs *r, __u64 *live, __u64 next)
{
	unsigned int cpl = r->cs & 3;
	__u64 *fl = hdr->emu_flags == FBT_EMU_LIVE ? live : &r->flags;

	if (in->pfx & (FBT_P_66 | FBT_P_F0))
		return -FBT_ENOTSUPP;
	switch (in->op) {
	case 0x9c:
#ifdef FBT_BREAK_PUSHF_REPAIR
		fl = live;				/* broken on purpose: the handler's flags */
#endif
		fbt_push(r, fbt_pushf_value(*fl));
		break;
	case 0x9d:
		*fl = fbt_popf_value(*fl, fbt_pop(r), cpl);
		break;
	case 0xfa:
	case 0xfb:
		if (cpl > ((r->flags & FBT_FL_IOPL) >> 12))
			return -FBT_ENOTSUPP;		/* #GP on the CPU: never emulate that */
		if (in->op == 0xfa)
			*fl &= ~FBT_FL_IF;
		else
			*fl |= FBT_FL_IF;		/* the STI shadow is not modelled */
		break;
	default:
		return -FBT_ENOTSUPP;
	}
	r->ip = next;
	return 0;
}

/*
 * Emulate insn on regs, whose ip is the instruction's address; live_flags are the handler's
 * own flags (read and written only when the header says FBT_EMU_LIVE). Returns 0 with regs
 * advanced, or -FBT_ENOTSUPP with regs untouched (the module then refuses the probe).
 */
int fbt_emulate(const struct fbt_insn *in, const struct fbt_emu_header *hdr,
		struct fbt_regs *r, __u64 *live_flags)
{
	__u64 next = r->ip + in->len;

	if (in->vex || (in->pfx & FBT_P_F0))
		return -FBT_ENOTSUPP;
	if (in->map == 0) {
		switch (in->op) {
		case 0x9c: case 0x9d: case 0xfa: case 0xfb:
			return fbt_emulate_flags(in, hdr, r, live_flags, next);
		case 0x70 ... 0x7f: case 0xc2: case 0xc3: case 0xca: case 0xcb:
		case 0xe0 ... 0xe3: case 0xe8: case 0xe9: case 0xeb: case 0xff:
			return fbt_emulate_branch(in, r, next);
		}
	} else if (in->map == 1 && in->op >= 0x80 && in->op <= 0x8f) {
		return fbt_emulate_branch(in, r, next);
	}
	return fbt_emulate_plain(in, r, next);
}

/* ------------------------------------------------------------------------------------------ */
/* Out-of-line steps. */

static int fbt_is_rel_branch(const struct fbt_insn *in)
{
	if (in->vex)
		return 0;
	if (in->map == 1)
		return in->op >= 0x80 && in->op <= 0x8f;
	if (in->map != 0)
		return 0;
	return (in->op >= 0x70 && in->op <= 0x7f) || (in->op >= 0xe0 && in->op <= 0xe3) ||
	       in->op == 0xe8 || in->op == 0xe9 || in->op == 0xeb;
}

/* ff /2 or ff /4: the register number of the ModRM reg field, or -1. */
static int fbt_indirect(const struct fbt_insn *in)
{
	unsigned int reg;

	if (in->vex || in->map != 0 || in->op != 0xff)
		return -1;
	reg = FBT_MODRM_REG(in->bytes[in->modrm_off]);
	return reg == 2 || reg == 4 ? (int)reg : -1;
}

/* Transfers that leave the copy and never reach a trailing int3. */
static int fbt_is_transfer(const struct fbt_insn *in)
{
	if (in->vex)
		return 0;
	if (fbt_is_rel_branch(in) || fbt_indirect(in) >= 0)
		return 1;
	if (in->map == 1)
		return in->op == 0x05 || in->op == 0x07 || in->op == 0x34 || in->op == 0x35;
	switch (in->op) {
	case 0xc2: case 0xc3: case 0xca: case 0xcb: case 0xcc: case 0xcd: case 0xcf: case 0xf1:
		return 1;
	case 0xff:
		return FBT_MODRM_REG(in->bytes[in->modrm_off]) == 3 ||
		       FBT_MODRM_REG(in->bytes[in->modrm_off]) == 5;
	}
	return 0;
}

static int fbt_is_rep_string(const struct fbt_insn *in)
{
	if (in->vex || in->map != 0 || !(in->pfx & (FBT_P_F2 | FBT_P_F3)))
		return 0;
	return (in->op >= 0x6c && in->op <= 0x6f) || (in->op >= 0xa4 && in->op <= 0xa7) ||
	       (in->op >= 0xaa && in->op <= 0xaf);
}

static void fbt_put_imm(__u8 *p, unsigned int len, __s32 v)
{
	unsigned int i;

	for (i = 0; i < len; i++)
		p[i] = (__u8)((__u32)v >> (8 * i));
}

/*
 * Build the copy of insn that runs at slot_ip in place of orig_ip, for the header's step
 * mechanism and the fixups the table names:
 *  - RIP_DISP: a disp32(%rip) is rebased so the copy reads what the original would
 *    (as __copy_instruction does); -FBT_ERANGE when the new displacement does not fit.
 *  - BRANCH_TARGET on a relative branch: under TF the copy runs as is and the target is
 *    translated afterwards; under INT3 the copy's displacement is pointed at a second int3,
 *    so the trap tells taken from not taken, and the target is recomputed from orig_ip.
 *  - TRANSFER_IP on ff /2, ff /4: under TF the IP the copy set is kept; under INT3 the copy
 *    becomes ff /6 (push the same operand) and fbt_step_end() pops the target from it.
 *  - INT3 mechanism: a trailing int3. Other transfers that would escape the copy under INT3
 *    while the table asks for TRANSFER_IP give -FBT_ENOTSUPP.
 */
int fbt_step_prepare(struct fbt_step_state *st, const struct fbt_insn *in,
		     const struct fbt_emu_header *hdr, __u32 fixups, __u64 orig_ip, __u64 slot_ip)
{
	int int3 = hdr->step_mechanism == FBT_STEP_INT3;

	__builtin_memset(st, 0, sizeof(*st));
	st->orig_ip = orig_ip;
	st->slot_ip = slot_ip;
	st->fixups = fixups;
	st->mechanism = hdr->step_mechanism;
	st->step_if = hdr->step_if;
	st->len = in->len;
	st->copy_len = in->len;
	st->is_call = (in->map == 0 && !in->vex && in->op == 0xe8) || fbt_indirect(in) == 2;
	st->is_pushf = in->map == 0 && !in->vex && in->op == 0x9c;
	st->is_rep = fbt_is_rep_string(in);
	__builtin_memcpy(st->copy, in->bytes, in->len);

	if (fbt_rip_relative(in) && (fixups & FBT_FX_RIP_DISP)) {
		__s64 nd = fbt_le32(in->bytes + in->disp_off) + (__s64)(orig_ip - slot_ip);

		if (nd != (__s32)nd)
			return -FBT_ERANGE;
		fbt_put_imm(st->copy + in->disp_off, 4, (__s32)nd);
	}

	if (fbt_is_rel_branch(in) && (fixups & FBT_FX_BRANCH_TARGET)) {
		if (in->pfx & FBT_P_66)
			return -FBT_ENOTSUPP;
		st->kind = FBT_SK_RELBR;
		st->rel = (__s32)fbt_imm(in);
		if (int3) {
			fbt_put_imm(st->copy + in->imm_off, in->imm_len, 1);
			st->copy[st->copy_len++] = FBT_INT3;	/* fell through */
			st->copy[st->copy_len++] = FBT_INT3;	/* branched */
		}
		return 0;
	}
	if (fbt_indirect(in) >= 0 && (fixups & FBT_FX_TRANSFER_IP)) {
		st->kind = FBT_SK_INDIRECT;
		if (int3) {
			/* ff /2 and ff /4 become ff /6 with the same operand: push the target */
			st->copy[in->modrm_off] = (in->bytes[in->modrm_off] & 0xc7) | (6 << 3);
			st->copy[st->copy_len++] = FBT_INT3;
		}
		return 0;
	}
	if (int3 && fbt_is_transfer(in) && (fixups & FBT_FX_TRANSFER_IP))
		return -FBT_ENOTSUPP;
	if (int3)
		st->copy[st->copy_len++] = FBT_INT3;
	return 0;
}

/* Enter the copy: remember the interrupted flags, apply the IF policy, set TF for a TF step. */
void fbt_step_begin(struct fbt_step_state *st, struct fbt_regs *r)
{
	st->saved_flags = r->flags;
	/* an ff /6 copy pushes below the stack pointer, where jmp * writes nothing: keep it */
	if (st->kind == FBT_SK_INDIRECT && st->mechanism == FBT_STEP_INT3 && !st->is_call)
		st->below_sp = fbt_rd64(r->gpr[FBT_RSP] - 8);
	if (st->step_if == FBT_IF_MASKED)
		r->flags &= ~FBT_FL_IF;
	if (st->mechanism == FBT_STEP_TF)
		r->flags |= FBT_FL_TF;
	r->ip = st->slot_ip;
}

/*
 * Leave the copy. regs->ip is where it stopped: the address of the int3 that trapped (the
 * caller subtracts the int3's length), or for a TF step the IP the #DB reported. Applies the
 * fixups and returns FBT_STEP_DONE, FBT_STEP_AGAIN (REP continuation: regs is set to run the
 * copy once more), or -FBT_EESCAPED when the copy stopped where it cannot lead (no fixups
 * applied: the caller treats that as a fault at the original IP).
 */
int fbt_step_end(struct fbt_step_state *st, struct fbt_regs *r)
{
	__u64 ip = r->ip, slot_next = st->slot_ip + st->len, next = st->orig_ip + st->len;
	__u64 new_ip, sp = r->gpr[FBT_RSP];
	int tf = st->mechanism == FBT_STEP_TF;

	switch (st->kind) {
	case FBT_SK_RELBR:
		if (ip == slot_next)
			new_ip = next;			/* not taken (or taken with rel 0) */
		else if ((!tf && ip == slot_next + 1) || (tf && ip == slot_next + (__s64)st->rel))
			new_ip = next + (__s64)st->rel;
		else
			return -FBT_EESCAPED;
		if (st->is_call && (st->fixups & FBT_FX_RETURN_ADDR) && fbt_rd64(sp) == slot_next)
			fbt_wr64(sp, next);
		break;
	case FBT_SK_INDIRECT:
		if (tf) {
			new_ip = ip;			/* the target the copy jumped to */
			if (st->is_call && (st->fixups & FBT_FX_RETURN_ADDR) &&
			    fbt_rd64(sp) == slot_next)
				fbt_wr64(sp, next);
			break;
		}
		if (ip != st->slot_ip + st->len)
			return -FBT_EESCAPED;
		new_ip = fbt_rd64(sp);			/* what ff /6 pushed */
		if (st->is_call) {
			fbt_wr64(sp, (st->fixups & FBT_FX_RETURN_ADDR) ? next : slot_next);
		} else {
			fbt_wr64(sp, st->below_sp);
			r->gpr[FBT_RSP] = sp + 8;
		}
		break;
	default:
		if (tf && st->is_rep && (st->fixups & FBT_FX_REP_CONT) && ip == st->slot_ip)
			return FBT_STEP_AGAIN;		/* iterations left: TF is still set */
		if (!tf && ip != slot_next)
			return -FBT_EESCAPED;
		if (st->fixups & FBT_FX_TRANSFER_IP)
			new_ip = ip == slot_next ? next : ip;
		else
			new_ip = next;			/* a step assumes the copy fell through */
		if (st->is_call && (st->fixups & FBT_FX_RETURN_ADDR) && fbt_rd64(sp) == slot_next)
			fbt_wr64(sp, next);
		break;
	}

#ifndef FBT_BREAK_PUSHF_REPAIR
	if (st->is_pushf && (st->fixups & FBT_FX_PUSHED_FLAGS)) {
		__u64 v = fbt_rd64(sp);

		/* as kprobes' resume_execution did: *tos &= ~(TF|IF); *tos |= old (TF|IF) */
		v = (v & ~(FBT_FL_TF | FBT_FL_IF)) | (st->saved_flags & (FBT_FL_TF | FBT_FL_IF));
		fbt_wr64(sp, v);
	}
#endif
	if (tf)
		r->flags = (r->flags & ~FBT_FL_TF) | (st->saved_flags & FBT_FL_TF);
	if (st->fixups & FBT_FX_LIVE_IF)
		r->flags = (r->flags & ~FBT_FL_IF) | (st->saved_flags & FBT_FL_IF);
	r->ip = new_ip;
	return FBT_STEP_DONE;
}

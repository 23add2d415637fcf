"""platform.py: which boot-time forms can be live on a platform (--platform): a function of (form, platform).

annotate.py gives every patchpoint each form a boot-time rewrite can leave (variants); `--platform all`
(the default) judges them all, worst wins. A named platform keeps only the forms that platform can leave
live, read from the x86 boot code of 6.1 and 6.12 (arch/x86/kernel/alternative.c, paravirt.c):

- `alternative_instructions` runs `apply_paravirt` (6.1) on every boot: each `.parainstructions` site
  (`call *pv_ops+N(%rip)`) becomes a direct call to the op's function, or NOPs for `_paravirt_nop`
  (`paravirt_patch`; a NULL op becomes `call BUG_func`). The indirect form never survives a boot, on bare
  metal, KVM or Xen PV alike: on Xen PV the call goes to Xen's op instead (not knowable from the image:
  the image's native target stands in; kprobes judges the form, a direct call, not the target; an op that
  is `_paravirt_nop` natively may be a call on Xen, and the reverse: both forms are ones kprobes accepts).
  6.12 does the same through `ALT_CALL_ALWAYS` alternatives (feature X86_FEATURE_ALWAYS, always set).
- `apply_alternatives` then runs: a replacement keyed to X86_FEATURE_XENPV is live on Xen PV only
  (ALT_NOT(X86_FEATURE_XENPV), 6.12's ALT_NOT_XEN, everywhere else); X86_FEATURE_ALWAYS always; any other
  feature depends on the CPU, so both forms stay possible.
- `.smp_locks`: on a boot with more than one CPU present the lock prefixes stay (`f0`); with one CPU present
  they become DS prefixes (`3e`, `alternatives_smp_unlock`), remembered (`smp_alt_modules`) only when more
  CPUs are possible: only then does a CPU coming up rewrite them while the kernel runs
  (`alternatives_smp_switch`), and only then does kprobes refuse them (`alternatives_text_reserved` walks
  `smp_alt_modules`). So `native` and `xen-pv` judge both prefixes as boot-time forms; `up` (booted with
  one CPU present, more possible: `maxcpus=`, CPU hotplug) keeps FBT201 on them, as `all` does.
"""

from __future__ import annotations

from fbt_audit.decode.insn import decode
from fbt_audit.model.core import Patchpoint, Variant
from fbt_audit.model.facts import RUNTIME_WRITERS

PLATFORMS = ("all", "native", "xen-pv", "up")
PLATFORM_HELP = {
    "all": "every form any boot can leave, worst wins (the default)",
    "native": "bare metal or a hardware-virtualised guest (KVM, QEMU, Xen HVM), booted SMP or with one CPU",
    "xen-pv": "a Xen PV guest: X86_FEATURE_XENPV set, paravirt ops are Xen's",
    "up": "native, booted uniprocessor-patched with more CPUs possible: .smp_locks rewritten at run time",
}
XENPV = 8 * 32 + 16  # X86_FEATURE_XENPV (arch/x86/include/asm/cpufeatures.h, 6.1 and 6.12)
ALWAYS = 3 * 32 + 21  # X86_FEATURE_ALWAYS
SMP_LOCK = RUNTIME_WRITERS["smp_locks"]
LOCK, DS = 0xF0, 0x3E


def feature_on(feature: int, negated: bool, platform: str) -> bool | None:
    """Whether an alternative's condition holds on every boot of the platform (True), on none (False), or
    depends on the CPU (None)."""
    if feature == ALWAYS:
        held: bool | None = True
    elif feature == XENPV:
        held = platform == "xen-pv"
    else:
        return None
    return (not held) if negated else held


def _alt_feature(label: str) -> tuple[int, bool] | None:
    """alt(!8*32+16) -> (8*32+16, True); None for any other label."""
    if not label.startswith("alt(") or not label.endswith(")"):
        return None
    body = label[4:-1]
    negated = body.startswith("!")
    word, _, bit = body.lstrip("!").partition("*32+")
    if not (word.isdigit() and bit.isdigit()):
        return None
    return int(word) * 32 + int(bit), negated


def live_forms(variants: tuple[Variant, ...], platform: str) -> tuple[Variant, ...]:
    """The forms of one patchpoint the platform can leave live, in their order. The disk form is dead when a
    rewrite certain on the platform covers it (paravirt, an alternative whose condition always holds); a
    paravirt form is dead when such an alternative overwrites it (alternatives run after paravirt);
    an alternative whose condition never holds is dead. Everything else (ftrace, thunks, the IBT seal,
    CPU-dependent alternatives) stays."""
    if platform == "all":
        return variants
    certain_alt = never = False
    dead_alts = set()
    for v in variants:
        feat = _alt_feature(v.label)
        if feat is None:
            continue
        on = feature_on(feat[0], feat[1], platform)
        if on is True:
            certain_alt = True
        elif on is False:
            never = True
            dead_alts.add(v.label)
    paravirt = any(v.label.startswith("paravirt(") for v in variants)
    if not (certain_alt or never or paravirt):
        return variants
    keep = []
    for v in variants:
        if v.label == "disk" and (paravirt or certain_alt):
            continue
        if v.label.startswith("paravirt(") and certain_alt:
            continue
        if v.label in dead_alts:
            continue
        keep.append(v)
    return tuple(keep) or variants


def lock_forms(pp: Patchpoint, platform: str) -> tuple[frozenset[str], tuple[Variant, ...]] | None:
    """For an `.smp_locks` site on a platform that never rewrites it while running: the facts without the
    run-time writer, and the variants plus the DS-prefixed form (the lock form is the disk form). None when
    nothing changes."""
    if platform in ("all", "up") or SMP_LOCK not in pp.facts:
        return None
    raw = pp.insn.raw
    i = raw.find(bytes([LOCK]), 0, max(0, len(raw) - 1))
    if i < 0 or LOCK not in pp.insn.prefixes:
        return pp.facts - {SMP_LOCK}, pp.variants  # the lock prefix is elsewhere in the window
    ds = decode(raw[:i] + bytes([DS]) + raw[i + 1:], pp.addr)
    return pp.facts - {SMP_LOCK}, (*pp.variants, Variant("smp-lock(ds)", ds))


def apply_platform(pps: list[Patchpoint], platform: str) -> None:
    """Keep, in place, only the boot-time forms the platform can leave live (nothing changes for `all`)."""
    if platform == "all":
        return
    if platform not in PLATFORMS:
        raise ValueError(f"unknown platform {platform!r} (one of {', '.join(PLATFORMS)})")
    for pp in pps:
        if len(pp.variants) > 1:
            pp.variants = live_forms(pp.variants, platform)
        if SMP_LOCK in pp.facts:
            got = lock_forms(pp, platform)
            if got is not None:
                pp.facts, pp.variants = got

"""oracle.py: ask the booted kernel's register_kprobe() about text symbols (kmod/oracle/) and read its answers."""

from __future__ import annotations

import gzip
import lzma
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from fbt_audit.verify import initramfs, qemu
from fbt_audit.verify.deps import NAMED_TABLES, InputError, Level

ORACLE_SRC = qemu.KMOD / "oracle"
# Under TCG kprobes answers about 65-80 registrations a second (reference/qemu.md): the timeout follows the list.
RATE = 40.0
BOOT_SECONDS = 120.0

INIT = r"""#!/bin/busybox sh
# /init of an fbt-audit oracle boot: load fbt_oracle.ko, ask register_kprobe() about each symbol, save the answers.
""" + initramfs.INIT_START + r"""echo 0 > /proc/sys/kernel/kptr_restrict
# every text symbol of the running kernel (no module is loaded yet), unless the host gave a list
if [ ! -s /syms.txt ]; then awk 'NF == 3 && $2 ~ /^[tTwW]$/' /proc/kallsyms > /syms.txt; fi
if ! insmod /fbt_oracle.ko; then mark insmod-failed; poweroff -f; fi
mark loaded n=$(wc -l < /syms.txt)
cat /syms.txt > /sys/kernel/debug/fbt_oracle/control
mark asked
cat /sys/kernel/debug/fbt_oracle/results > /out/results
uname -r > /out/release
mark collected
for m in @VIRTIO@; do insmod /mod/$m.ko; done
n=0; while [ ! -b /dev/vda ] && [ $n -lt 100 ]; do sleep 0.1; n=$((n+1)); done
tar cf /dev/vda -C /out . && sync
mark done
poweroff -f
"""


@dataclass(frozen=True)
class Answer:
    """What register_kprobe() said about one address: 0 (accepted) or the errno, and where it probed."""

    addr: int
    errno: int
    probed: int  # kp->addr after registration (sym+4 past an ENDBR); 0 when refused
    name: str

    @property
    def accepted(self) -> bool:
        return self.errno == 0


def headers(release: str) -> Path:
    """The kernel build tree of release: the installed headers, else the tree scripts/unpack-headers left in the
    cache (<cache>/<release>/headers/usr/src/linux-headers-<release>)."""
    kdir = Path(f"/lib/modules/{release}/build")
    if (kdir / "Makefile").is_file():
        return kdir
    cache = Path(os.environ.get("FBT_AUDIT_CACHE") or Path.home() / ".cache" / "fbt-audit")
    unpacked = cache / release / "headers" / "usr" / "src" / f"linux-headers-{release}"
    if (unpacked / ".unpacked").is_file():
        return unpacked
    raise InputError(f"{kdir}: no kernel headers for {release} (install linux-headers-{release}, or "
                     "scripts/unpack-headers VERSION for a locked one)")


def build_oracle(release: str, out: Path) -> Path:
    """Build a copy of kmod/oracle/ against the release's headers (headers()); returns fbt_oracle.ko.
    No BTF for the module: pahole is not needed and the oracle has no use for it."""
    kdir = headers(release)
    if shutil.which("make") is None:
        raise InputError("make is not installed: building kmod/oracle/ needs make and gcc")
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(ORACLE_SRC, out, ignore=shutil.ignore_patterns("*.o", "*.ko", "*.mod*", ".*.cmd"))
    proc = subprocess.run(["make", "-C", str(kdir), f"M={out}", "modules", "CONFIG_DEBUG_INFO_BTF_MODULES="],
                          capture_output=True, text=True)
    ko = out / "fbt_oracle.ko"
    if proc.returncode != 0 or not ko.is_file():
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise InputError(f"building kmod/oracle/ against {kdir} failed: {last}")
    return ko


def initrd(out: Path, ko: Path, modules_dir: Path, symbols: list[tuple[int, str]] | None) -> Path:
    """The oracle's initramfs: busybox, /init, fbt_oracle.ko, the virtio modules, and /syms.txt when the host
    chose the symbols (else the guest asks about every text symbol of /proc/kallsyms)."""
    a = initramfs.Newc()
    for d in ("bin", "dev", "proc", "sys", "tmp", "mod", "out", "root"):
        a.dir(d)
    a.chardev("dev/console", 5, 1)
    a.chardev("dev/null", 1, 3)
    a.file("bin/busybox", initramfs.find_busybox().read_bytes(), 0o755)
    mods = virtio_modules(modules_dir)
    init = INIT.replace("@MARK@", initramfs.MARK).replace("@VIRTIO@", " ".join(mods))
    a.file("init", init.encode(), 0o755)
    a.file("fbt_oracle.ko", ko.read_bytes())
    if symbols is not None:
        a.file("syms.txt", "".join(f"{addr:x} t {name}\n" for addr, name in symbols).encode())
    for m, data in mods.items():
        a.file(f"mod/{m}.ko", data)
    out.write_bytes(gzip.compress(a.bytes(), compresslevel=1))
    return out


def virtio_modules(modules_dir: Path) -> dict[str, bytes]:
    """The virtio modules the results disk needs, in load order, uncompressed (busybox insmod passes the bytes
    to init_module, which takes no .ko.xz); those the kernel has built in (6.12: all but virtio_blk) are absent."""
    out = {}
    for m in initramfs.VIRTIO:
        found = sorted(modules_dir.glob(f"kernel/**/{m}.ko")) or sorted(modules_dir.glob(f"kernel/**/{m}.ko.xz"))
        if found:
            data = found[0].read_bytes()
            out[m] = lzma.decompress(data) if found[0].suffix == ".xz" else data
    if "virtio_blk" not in out and not any(modules_dir.glob("modules.builtin")):
        raise InputError(f"{modules_dir}: no virtio_blk module (a kernel package without modules?)")
    return out


def parse(text: str) -> list[Answer]:
    """The module's results file: `addr errno probed name`, tab-separated, hex addresses."""
    out = []
    for line in text.splitlines():
        f = line.split("\t")
        if len(f) == 4:
            out.append(Answer(int(f[0], 16), int(f[1]), int(f[2], 16), f[3]))
    return out


def ask(target, workdir: Path, symbols: list[tuple[int, str]] | None, *, cpu: str = "max", smp: str = "1",
        timeout: float | None = None, expected: int = 60000) -> list[Answer]:
    """One boot: register_kprobe() on each (address, name) of symbols, or on every text symbol of the
    booted kernel when symbols is None. Returns the answers in the order asked. `smp` is QEMU's -smp:
    "1,maxcpus=2" boots uniprocessor-patched with a second CPU possible (--platform up)."""
    workdir.mkdir(parents=True, exist_ok=True)
    ko = build_oracle(target.release, workdir / "oracle-build")
    rd = initrd(workdir / "oracle-initrd.gz", ko, target.modules, symbols)
    n = len(symbols) if symbols is not None else expected
    t = timeout if timeout is not None else BOOT_SECONDS + n / RATE
    b = qemu.boot(target.vmlinuz, rd, workdir / "oracle-boot", cpu=cpu, smp=smp, timeout=t)
    rd.unlink(missing_ok=True)
    if "loaded" not in b.marks:
        why = "fbt_oracle.ko did not load" if "insmod-failed" in b.marks else "the boot never reached the shell"
        raise InputError(f"verify --oracle: {why} (serial log {b.serial})")
    if "results" not in b.files:
        late = " (timed out)" if b.timed_out else ""
        raise InputError(f"verify --oracle: the guest saved no results{late} (serial log {b.serial})")
    return parse(b.files["results"])


# --- the comparison with the audit -------------------------------------------------------------------------------

# The audit's refusal says "kprobes refuses" when a finding below error level (refused, deny) other than FBT206
# fires. FBT206 (not a function entry) is FBT's own policy for `.cold` parts and inner labels, which kprobes
# accepts; on `__pfx_`/`__cfi_` padding it is also kprobes' own refusal (is_cfi_preamble_symbol).
POLICY_ONLY = "FBT206"
PREAMBLE_FACTS = ("non-entry:pfx", "non-entry:cfi")
BUG_FACT = "bug-table"
PV_ALWAYS = "alt(3*32+21)"  # 6.12's ALT_CALL_ALWAYS: X86_FEATURE_ALWAYS


@dataclass(frozen=True)
class Difference:
    """A text symbol on which the audit's prediction and register_kprobe() disagree, and why."""

    name: str
    addr: int
    audit: str  # the refusing rules, "accept", or "no patchpoint"
    errno: int
    reason: str  # a class of differences (REASONS)


REASONS = {
    "bug-table": "a __bug_table ud2 at the entry: check_kprobe_address_safe's find_bug() refuses it (-EINVAL); "
    "the audit calls it unsafe (FBT105, stepping ud2), not refused",
    "section-marker": "a section boundary symbol (__*_text_start/end) with no patchpoint of its own: the audit "
    "judges the function that starts there, kprobes the marker (inside or at the edge of a refused range)",
    "preamble-alias": "__pfx_ padding that shares its address with other symbols (6.12: _text, _stext): "
    "is_cfi_preamble_symbol() reads the name lookup_symbol_name() gives the address, not __pfx_, and accepts",
    "smp-lock-runtime": "an .smp_locks prefix under --platform up or all (FBT201: rewritten when a CPU comes up); "
    "kprobes accepts it: arch_prepare_kprobe asks alternatives_text_reserved(addr, addr), an empty range",
    "paravirt-disk-form": "under --platform all, the on-disk `call *pv_ops+N(%rip)` of a paravirt site (kprobes "
    "refuses call *mem, FBT114); every boot makes it a direct call (6.1 apply_paravirt, 6.12 ALT_CALL_ALWAYS)",
    "other": "not explained",
}


@dataclass
class Comparison:
    total: int
    agree: int
    differences: list[Difference]

    @property
    def ratio(self) -> float:
        return self.agree / self.total if self.total else 1.0

    def by_reason(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for d in self.differences:
            out[d.reason] = out.get(d.reason, 0) + 1
        return dict(sorted(out.items(), key=lambda kv: (-kv[1], kv[0])))


def refusing_rules(j) -> list[str]:
    """The rules of a judgement that predict a kprobes refusal (see POLICY_ONLY)."""
    preamble = any(f in j.pp.facts for f in PREAMBLE_FACTS)
    return sorted({f.rule_id for f in j.findings
                   if f.level < Level.ERROR and (f.rule_id != POLICY_ONLY or preamble)})  # fmt: skip


def _reason(j, errno: int) -> str:
    if j is None:
        return "section-marker" if errno else "other"
    if errno and BUG_FACT in j.pp.facts and not refusing_rules(j):
        return "bug-table"
    if not errno and refusing_rules(j) == [POLICY_ONLY]:
        return "preamble-alias"
    if not errno and refusing_rules(j) == ["FBT201"] and "smp-lock" in j.pp.facts:
        return "smp-lock-runtime"
    vs = j.pp.variants
    if not errno and refusing_rules(j) == ["FBT114"] and vs and vs[0].label == "disk" and any(
            v.label.startswith("paravirt(") or v.label == PV_ALWAYS for v in vs):
        return "paravirt-disk-form"
    return "other"


def compare(result, answers: list[Answer]) -> Comparison:
    """Each answer against the audit's entry judgement of the symbol at that address."""
    by_addr = {}
    for j in result.judgements:
        if j.pp.site == "entry":
            by_addr.setdefault(j.pp.sym_addr, j)
    agree = 0
    diffs = []
    for a in answers:
        j = by_addr.get(a.addr)
        refuse = refusing_rules(j) if j is not None else None
        if refuse is not None and bool(refuse) != a.accepted:
            agree += 1
            continue
        audit = "no patchpoint" if j is None else (",".join(refuse) or "accept")
        diffs.append(Difference(a.name, a.addr, audit, a.errno, _reason(j, a.errno)))
    return Comparison(len(answers), agree, diffs)


# --- the saved full pass (tests/data/oracle-<release>.txt) ---------------------------------------------------------

DATA_HEAD = """# fbt-audit oracle: register_kprobe() on every text symbol of a booted kernel ({release})
# {n} symbols of /proc/kallsyms (t, T, w, W), asked in kallsyms order by kmod/oracle/ (disabled kprobes, then
# unregistered), QEMU TCG, -smp 1. A measured result of the locked kernel; regenerate with
#   scripts/oracle-pass {release}
# build-id {build_id}
# One row per symbol: the address as a hex delta from the previous row's (the first from 0), then the errno
# when kprobes refused it, or 0 +OFF when it accepted it at address+OFF (past an ENDBR).
"""


def save(path: Path, release: str, build_id: str, answers: list[Answer]) -> None:
    rows = []
    prev = 0
    for a in answers:
        row = f"{a.addr - prev:x}"
        if a.errno:
            row += f" {a.errno}"
        elif a.probed and a.probed != a.addr:
            row += f" 0 +{a.probed - a.addr:x}"
        rows.append(row)
        prev = a.addr
    path.write_text(DATA_HEAD.format(release=release, n=len(answers), build_id=build_id) + "\n".join(rows) + "\n")


def load(path: Path) -> tuple[dict[str, str], list[Answer]]:
    """The header's keys (release, build-id) and the answers (names are not saved: the audit names them)."""
    meta: dict[str, str] = {}
    out = []
    addr = 0
    for line in path.read_text().splitlines():
        if line.startswith("#"):
            words = line[1:].split()
            if len(words) == 2 and words[0] == "build-id":
                meta["build-id"] = words[1]
            continue
        f = line.split()
        addr += int(f[0], 16)
        errno = int(f[1]) if len(f) > 1 else 0
        probed = addr + int(f[2][1:], 16) if len(f) > 2 else (0 if errno else addr)
        out.append(Answer(addr, errno, probed, ""))
    return meta, out


def named(result, answers: list[Answer]) -> list[Answer]:
    """Answers loaded without names, named by the audit's symbols at their addresses (or hex)."""
    names = {}
    for j in result.judgements:
        names.setdefault(j.pp.sym_addr, j.pp.name)
    for sym in result.kernel.symbols or ():  # section markers and other symbols without a patchpoint
        names.setdefault(sym.addr, sym.name)
    return [Answer(a.addr, a.errno, a.probed, names.get(a.addr, f"0x{a.addr:x}")) for a in answers]


def kprobes_table(release: str) -> str:
    """The kprobes-* table for a release: 6.1.0-56-amd64 -> kprobes-6.1; a release with no table of its own
    -> kprobes (the newest)."""
    major_minor = ".".join(release.split("-")[0].split("+")[0].split(".")[:2])
    name = f"kprobes-{major_minor}"
    return name if name in NAMED_TABLES else "kprobes"


def choose(result, *, only: list[str] | None, sample: int | None, seed: int) -> list[tuple[int, str]] | None:
    """The (address, name) pairs to ask about: the named functions, a seeded sample of the audit's entry
    symbols, or None (every text symbol of the booted kernel)."""
    import random

    entries = sorted({(j.pp.sym_addr, j.pp.name) for j in result.judgements if j.pp.site == "entry"})
    if only:
        want = set(only)
        chosen = [e for e in entries if e[1] in want]
        missing = want - {n for _a, n in chosen}
        if missing:
            raise InputError(f"verify --oracle --only: no entry patchpoint for {', '.join(sorted(missing))}")
        return chosen
    if sample is not None and sample < len(entries):
        return sorted(random.Random(seed).sample(entries, sample))
    return None


def render(cmp: Comparison, release: str, table: str, platform: str, limit: int = 50) -> str:
    lines = [f"fbt-audit verify --oracle: {release}, --table {table} --platform {platform}",
             f"agreement: {cmp.agree} of {cmp.total} text symbols ({100 * cmp.ratio:.3f}%)"]  # fmt: skip
    for reason, n in cmp.by_reason().items():
        lines.append(f"  {n:6d} {reason}: {REASONS.get(reason, '')}")
    for d in cmp.differences[:limit]:
        lines.append(f"  {d.name} 0x{d.addr:x}: audit {d.audit}, register_kprobe {-d.errno if d.errno else 0} "
                     f"[{d.reason}]")
    if len(cmp.differences) > limit:
        lines.append(f"  ... {len(cmp.differences) - limit} more")
    return "\n".join(lines) + "\n"

"""test_fuzz_real.py: fuzz real bookworm 6.1 inputs: small signed .ko modules (plain and .ko.xz) and the vmlinuz header.

python3 -m pytest -q -m kernel tests/kernel/test_fuzz_real.py     # ~300 module and ~60 vmlinuz cases
FBT_FUZZ_REAL_EXAMPLES=3000 ...                                    # more (vmlinuz cases take seconds each)
"""

from __future__ import annotations

import itertools
import os
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ..helpers_fuzz import (
    EXTRA,
    Field,
    Shape,
    audit_all,
    bounded_memory,
    bz_shape,
    check_run,
    compress,
    mutate,
    shape,
    values,
)

pytestmark = pytest.mark.kernel

EXAMPLES = int(os.environ.get("FBT_FUZZ_REAL_EXAMPLES", "300"))
# small modules of the 6.1 tree with kernel tables (jump labels, alternatives, ex_table, mcount, static calls)
MODULES = ["net/vmw_vsock/vsock_loopback.ko", "arch/x86/kernel/cpu/mce/mce-inject.ko", "net/6lowpan/nhc_ipv6.ko"]
COMMON = dict(suppress_health_check=list(HealthCheck), database=None, print_blob=True)


@pytest.fixture(scope="module")
def real(image61, tmp_path_factory):
    """The seeds: each module, signed as shipped, with its structure map; the vmlinuz; a scratch directory."""
    (tree,) = (image61 / "lib" / "modules").glob("*/kernel")  # the locked package: one release, every seed
    mods = {}
    for rel in MODULES:
        data = (tree / rel).read_bytes()
        mods[rel.rsplit("/", 1)[-1]] = (data, shape(data))
    (vmlinuz,) = (image61 / "boot").glob("vmlinuz-*")
    blob = vmlinuz.read_bytes()
    work = tmp_path_factory.mktemp("fuzz-real")
    return {"modules": mods, "vmlinuz": blob, "vmlinuz-shape": bz_shape(blob), "work": work, "n": itertools.count()}


@pytest.fixture(scope="module", autouse=True)
def memory_limit():
    with bounded_memory():
        yield


@settings(max_examples=EXAMPLES, deadline=timedelta(seconds=30), **COMMON)
@given(data=st.data())
def test_mutated_real_module(real, data):
    """A real signed module: headers, section, symbol and relocation tables, kernel tables, the signature
    trailer; as .ko or, after mutation, as .ko.xz."""
    name = data.draw(st.sampled_from(sorted(real["modules"])), label="seed")
    blob, where = real["modules"][name]
    blob = mutate(data, blob, where)
    xz = data.draw(st.booleans(), label="xz?")
    path = real["work"] / f"case{next(real['n'])}-{name}{'.xz' if xz else ''}"
    audit_all(path, compress("xz", blob) if xz else blob, data.draw(st.sampled_from(EXTRA), label="extra"))


def _payload_fields(blob: bytes) -> list[Field]:
    """Bytes of the xz stream header at the head of the vmlinuz payload."""
    start = (blob[0x1F1] + 1) * 512 + int.from_bytes(blob[0x248:0x24C], "little")
    return [Field(f"payload+{o}", start + o, 1) for o in range(0, 16, 4)]


@settings(max_examples=max(10, EXAMPLES // 5), deadline=None, **COMMON)
@given(data=st.data())
def test_mutated_real_vmlinuz_header(real, data):
    """The real vmlinuz's setup header (setup_sects, version, payload_offset/length, init_size ...) and the
    head of its xz payload. A case that still decompresses is audited in full (seconds), one format."""
    blob = real["vmlinuz"]
    where = real["vmlinuz-shape"]
    # the magics (boot_flag, HdrS) once, so that most cases get past is_bzimage
    fields = sorted({f for f in where.fields if f.name not in ("boot_flag", "header")}, key=lambda f: f.offset)
    magics = sorted({f for f in where.fields if f.name in ("boot_flag", "header")}, key=lambda f: f.offset)
    where = Shape(fields * 4 + magics + _payload_fields(blob), where.cuts)
    buf = bytearray(blob)
    for f in data.draw(st.lists(st.sampled_from(where.fields), min_size=1, max_size=3), label="fields"):
        orig = int.from_bytes(buf[f.offset : f.offset + f.width], "little")
        buf[f.offset : f.offset + f.width] = data.draw(values(f.width, len(blob), orig), label=f.name).to_bytes(
            f.width, "little"
        )
    if data.draw(st.integers(0, 9), label="cut?") == 0:
        del buf[data.draw(st.sampled_from(where.cuts), label="cut at") :]
    path = real["work"] / f"case{next(real['n'])}-vmlinuz"
    path.write_bytes(bytes(buf))
    try:
        check_run([str(path), "--format", "list"], timeout=300)
    finally:
        path.unlink(missing_ok=True)

"""test_returns_vectorised.py: on real kernels the vectorised sweep gives capstone's return patchpoints exactly."""

from __future__ import annotations

import pytest

from fbt_audit.patchpoints.returns import return_patchpoints
from fbt_audit.pipeline import api

from ..test_sites import one_by_one_returns

pytestmark = pytest.mark.kernel


@pytest.mark.parametrize("which", ["vmlinux61", "vmlinux612"])
def test_vectorised_returns_equal_capstone_sweep(which, request):
    path = request.getfixturevalue(which)
    fast, st_fast = return_patchpoints(api.load_kernel(path))
    slow, st_slow = return_patchpoints(api.load_kernel(path), vectorised=False)
    assert st_fast == st_slow
    assert fast == slow


@pytest.mark.parametrize("which", ["vmlinux61", "vmlinux612"])
def test_return_rows_as_built_one_by_one(which, request):
    """The return rows' facts, variants and judgements from the columns equal those of every return patchpoint
    built, annotated and judged one by one (what --returns did before the rows), in the same order."""
    one_by_one_returns(request.getfixturevalue(which), "reference")

"""rows.py: the judge over entry rows: one judgement per distinct key, Judgements built only for what is reported."""

from __future__ import annotations

import numpy as np

from fbt_audit.judge.judge import Judge
from fbt_audit.model.core import IC, Judgement, Verdict
from fbt_audit.patchpoints.entry import EntryRows

_REL = IC.REL_CALL | IC.REL_BRANCH


class JudgedRows:
    """The judgements of every entry row: `judged` (row -> Judgement) for every row with findings; each other
    row has no findings and its group's handling, and is built as a Judgement only when all are asked for
    (judgements())."""

    def __init__(self, rows: EntryRows, judged: dict[int, Judgement], group: np.ndarray, handling: list[str],
                 copies: dict[int, int] | None = None) -> None:  # fmt: skip
        self.rows, self.judged, self.group, self.handling = rows, judged, group, handling
        # A row with findings that was not judged itself -> the row judged for its group (the same findings):
        # its Judgement is built when first read (judgement()), and a text digest may never need it.
        self.copies = copies if copies is not None else {}
        self.reported_rows = sorted([*(i for i, j in judged.items() if j.findings), *self.copies])

    @property
    def n(self) -> int:
        return self.rows.n

    def findings_of(self, i: int) -> Judgement:
        """The Judgement whose findings, handling and verdict row i (one with findings) has: its own or its
        group's, without building one for the row."""
        j = self.judged.get(i)
        return j if j is not None else self.judged[self.copies[i]]

    def judgement(self, i: int) -> Judgement:
        """Row i's own Judgement (a row with findings)."""
        j = self.judged.get(i)
        if j is None:
            rep = self.judged[self.copies.pop(i)]
            j = self.judged[i] = Judgement(self.rows.patchpoint(i), rep.findings[:], rep.handling)
        return j

    def reported(self) -> list[Judgement]:
        """The judgements with findings, in row (address) order (the rows not built yet built together)."""
        pending = [i for i in self.reported_rows if i in self.copies]
        for i, pp in zip(pending, self.rows.build(pending), strict=True):
            rep = self.judged[self.copies.pop(i)]
            self.judged[i] = Judgement(pp, rep.findings[:], rep.handling)
        return [self.judged[i] for i in self.reported_rows]

    def judgements(self) -> list[Judgement]:
        """Every row's judgement, in row order (the ones not kept are built now, with no findings)."""
        has = set(self.reported_rows)
        group, handling, pp = self.group.tolist(), self.handling, self.rows.patchpoint
        return [self.judgement(i) if i in has else Judgement(pp(i), [], handling[group[i]]) for i in range(self.n)]

    def name_addrs(self) -> set[tuple[str, int]]:
        """(symbol name, address) of every row."""
        return set(zip(map(self.rows.name, range(self.n)), self.rows.sym_addr.tolist(), strict=True))

    @property
    def detached(self) -> bool:
        """Whether the rows no longer need the image (EntryRows.detach): then they are what is pickled."""
        return self.rows.raw_at is not None

    def verdicts(self) -> dict[Verdict, int]:
        """How many rows take each verdict."""
        out = dict.fromkeys(Verdict, 0)
        for i in self.reported_rows:
            out[self.findings_of(i).verdict] += 1
        out[Verdict.SAFE] = self.n - len(self.reported_rows)
        return out


def judge_rows(judge: Judge, rows: EntryRows) -> JudgedRows:
    """Judge every entry row. Rows not built as Patchpoints are grouped by what the judge's memo key reads
    of them (instruction shape, target name, ftrace site; their facts and variants follow from those); each
    group is judged once at its first row, the built rows one by one, all in row order, so that the judge
    meets (and memoises) them in the order a row-by-row pass would. A relative branch to an unnamed target is
    keyed by its bytes and target: judged on its own. Without the judge's memo (a rule that reads more than
    the facts) every row is judged on its own."""
    n = rows.n
    if judge.memoises:
        rel = np.array([bool(s[7] & _REL) for s in rows.shapes], dtype=bool)[rows.shape]
        tkey = np.where(rel, rows.tname + 1, 0)
        key = (rows.shape * (len(rows.tnames) + 2) + tkey) * 2 + rows.ftrace
        if rows.site_facts:  # and the facts a row's sites gave it (sites/annotate.py), by distinct set
            ids: dict[frozenset[str], int] = {}
            fid = np.zeros(n, dtype=np.int64)
            for i, facts in rows.site_facts.items():
                fid[i] = ids.setdefault(facts, len(ids) + 1)
            key = key * (len(ids) + 1) + fid
        solo = rel & (rows.tname < 0)
        solo[list(rows.objs)] = True
        key[solo] = -1 - np.flatnonzero(solo)
    else:
        key = -1 - np.arange(n)
    _uniq, first, group = np.unique(key, return_index=True, return_inverse=True)
    group = group.reshape(-1)
    judged: dict[int, Judgement] = {}
    handling: list[str] = [""] * len(first)
    findings = np.zeros(len(first), dtype=bool)
    order = sorted(zip(group[first].tolist(), first.tolist(), strict=True), key=lambda gi: gi[1])
    for (g, i), pp in zip(order, rows.build([i for _g, i in order]), strict=True):
        j = judged[i] = judge(pp)
        handling[g] = j.handling
        findings[g] = bool(j.findings)
    copies = {i: int(first[group[i]]) for i in np.flatnonzero(findings[group]).tolist() if i not in judged}
    # Only the judgements with findings are kept: the others are their group's handling and no findings, built
    # again the same when every row is asked for (and a module tree's parent holds fewer objects).
    kept = {i: j for i, j in judged.items() if j.findings}
    return JudgedRows(rows, kept, group, handling, copies)

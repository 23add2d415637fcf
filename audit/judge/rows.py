"""rows.py: the judge over entry and return rows: once per distinct key, Judgements built only for what is reported."""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from fbt_audit.judge.judge import Judge, fill, without_values
from fbt_audit.model.abi import Target
from fbt_audit.model.core import IC, Finding, Judgement, Level, Verdict
from fbt_audit.patchpoints.entry import EntryRows

_REL = IC.REL_CALL | IC.REL_BRANCH
_NO_FACTS: frozenset[str] = frozenset()
CLASSES_FROM = 256  # groups from which judge_rows reads variants per class (numpy's fixed cost: a module's few)


class JudgedRows:
    """The judgements of every entry row: `judged` (row -> Judgement) for the rows with findings built so far;
    `shared` (row -> Judge.alike's findings and handling) for the rows judged without building them, filled in
    (judge.judge.fill) when first read; each other row has no findings and its group's handling, and is built as a
    Judgement only when all are asked for (judgements())."""

    def __init__(self, rows: EntryRows, judged: dict[int, Judgement], group: np.ndarray, handling: list[str],
                 copies: dict[int, int] | None = None, shared: dict[int, tuple] | None = None,
                 params: tuple[str, ...] = ()) -> None:  # fmt: skip
        self.rows, self.judged, self.group, self.handling = rows, judged, group, handling
        self.shared, self.params = shared if shared is not None else {}, params
        # A row with findings that was not judged itself -> the row judged for its group (the same findings):
        # its Judgement is built when first read (judgement()), and a text digest may never need it.
        self.copies = copies if copies is not None else {}
        self.reported_rows = sorted([*(i for i, j in judged.items() if j.findings), *self.shared, *self.copies])
        # Each reported row's judged row (itself, or its group's): the summaries count findings once per judged
        # row, times its rows (tally()), instead of once per row.
        self.reps = [self.copies.get(i, i) for i in self.reported_rows]

    @property
    def n(self) -> int:
        return self.rows.n

    def proto(self, rep: int) -> list[Finding]:
        """The findings of judged row rep (one of reps) as its group's rows have them, but for the placeholders of
        a shared judgement's messages: rule ids, levels and variants, without building a Judgement."""
        s = self.shared.get(rep)
        return s[0] if s is not None else self.judged[rep].findings

    def judgement(self, i: int) -> Judgement:
        """Row i's own Judgement (a row with findings)."""
        j = self.judged.get(i)
        if j is None:
            j = self.judged[i] = self._own(i, self.rows.patchpoint(i))
        return j

    def _own(self, i: int, pp) -> Judgement:
        """Row i's Judgement, pp its Patchpoint: its group's findings (a group's rows print the same texts: the
        same bytes or target name, the same facts), filled in once per group."""
        rep = self.copies.pop(i, i)
        s = self.shared.get(rep)
        if s is not None:
            filled = self.__dict__.setdefault("_filled", {})
            got = filled.get(rep)
            if got is None:
                j = fill(pp, s, self.params)
                filled[rep] = j.findings
                return j
            return Judgement(pp, got[:], s[1])
        r = self.judged[rep]
        return Judgement(pp, r.findings[:], r.handling)

    def reported(self) -> list[Judgement]:
        """The judgements with findings, in row (address) order (the rows not built yet built together)."""
        pending = [i for i in self.reported_rows if i not in self.judged]
        for i, pp in zip(pending, self.rows.build(pending) if pending else [], strict=True):
            self.judged[i] = self._own(i, pp)
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

    def detach(self, kernel) -> None:
        """Let the image go (EntryRows.detach, ReturnRows.detach): `kernel` is the detached one."""
        self.rows.detach(kernel)

    def tally(self) -> dict[int, int]:
        """Judged row -> how many reported rows have its findings, in the order each first appears in row order
        (so that counts built from it meet rule ids and verdicts in the order a row-by-row pass would)."""
        t = self.__dict__.get("_tally")
        if t is None:
            t = self._tally = Counter(self.reps)
        return t

    def finding_rules(self) -> Counter[str]:
        """Findings per rule id, in row order (AuditResult.finding_rules), without building the rows' Judgements."""
        out: Counter[str] = Counter()
        for rep, n in self.tally().items():
            for f in self.proto(rep):
                out[f.rule_id] += n
        return out

    @property
    def worst(self) -> Level | None:
        """The most severe level among the findings (AuditResult.worst_finding), without building Judgements."""
        return max((f.level for rep in self.tally() for f in self.proto(rep)), default=None)

    def verdicts(self) -> dict[Verdict, int]:
        """How many rows take each verdict."""
        out = self.__dict__.get("_verdicts")
        if out is None:
            out = self._verdicts = dict.fromkeys(Verdict, 0)
            by_list: dict[int, Verdict] = {}  # a shared judgement's findings are one list for all its groups
            for rep, n in self.tally().items():
                fs = self.proto(rep)
                v = by_list.get(id(fs))
                if v is None:
                    v = by_list[id(fs)] = Verdict.of_findings(fs)
                out[v] += n
            out[Verdict.SAFE] = self.n - len(self.reported_rows)
        return dict(out)


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
            fid[list(rows.site_facts)] = [ids.setdefault(facts, len(ids) + 1) for facts in rows.site_facts.values()]
            key = key * (len(ids) + 1) + fid
        solo = rel & (rows.tname < 0)
        solo[list(rows.objs)] = True
        key[solo] = -1 - np.flatnonzero(solo)
    else:
        key = -1 - np.arange(n)
    _uniq, first, group = np.unique(key, return_index=True, return_inverse=True)
    classes = _variant_classes(rows) if judge.reads_shape_only and len(first) >= CLASSES_FROM else None
    return _judge_groups(judge, rows, first, group.reshape(-1), classes)


def _variant_classes(rows: EntryRows) -> np.ndarray:
    """Per row, a class of the rows whose variants the judge reads alike (Judge.variants_key): the same shape (the
    Insn fields but the address, target and text), target class and ftrace site; -1 for a row built or moved past
    instructions (judged on its Patchpoint)."""
    tcls = np.array([int(c) for _n, c in rows.tnames] + [int(Target.ANY)], dtype=np.int64)[rows.tname]
    cls = (rows.shape * (len(Target) + 1) + tcls) * 2 + rows.ftrace
    cls[list(rows.objs)] = -1
    return cls


def judge_return_rows(judge: Judge, rets: Any) -> JudgedRows:
    """Judge every return row (patchpoints.returns.ReturnRows), as judge_rows does the entry rows: rows not built
    as Patchpoints grouped by their instruction (ret, ret imm16 by its immediate, a thunk jump by its target; in a
    module, whose jump targets come from relocations, each jump on its own) and their facts (rets.fact_id, which
    also tells the return-thunk variant); each group judged once, at its first row, the built rows one by one."""
    n = rets.n
    key = np.zeros(n, dtype=np.int64)
    solo = np.zeros(n, dtype=bool) if judge.memoises else np.ones(n, dtype=bool)
    c2, jmp = rets.op == 0xC2, rets.op == 0xE9
    key[c2] = 1 + rets.imm[c2]
    if rets.kernel.call_targets:
        solo |= jmp
    elif jmp.any():
        _t, tid = np.unique(rets.target[jmp], return_inverse=True)
        key[jmp] = (1 << 17) + tid.reshape(-1)
    key = key * len(rets.factsets) + rets.fact_id
    solo[list(rets.objs)] = True
    solo |= ~rets.whole  # its bytes cut short by the file's end: not what its columns say
    key[solo] = -1 - np.flatnonzero(solo)
    _uniq, first, group = np.unique(key, return_index=True, return_inverse=True)
    return _judge_groups(judge, rets, first, group.reshape(-1))


def _judge_groups(judge: Judge, rows: Any, first: np.ndarray, group: np.ndarray,
                  vclass: np.ndarray | None = None) -> JudgedRows:  # fmt: skip
    """Each group judged at its first row, in row order: from the row's variants and facts alone where the judge
    shares judgements (Judge.alike, rows.variant_inputs), else on its Patchpoint (the rows built together:
    rows.build); the other rows of a group with findings get its findings when read (JudgedRows.copies)."""
    judged: dict[int, Judgement] = {}
    shared: dict[int, tuple] = {}
    handling: list[str] = [""] * len(first)
    findings = np.zeros(len(first), dtype=bool)
    order = sorted(zip(group[first].tolist(), first.tolist(), strict=True), key=lambda gi: gi[1])
    idx = [i for _g, i in order]
    if not (judge.shares and hasattr(rows, "variant_inputs")):
        hits = [None] * len(idx)
    elif vclass is not None:  # a vmlinux's thousands of groups: variants read once per class
        hits = _alike_by_class(judge, rows, idx, vclass[idx].tolist())
    elif hasattr(rows, "variant_keys"):  # a module's few dozen: most met in an earlier module (Judge.groups)
        hits = _alike_by_key(judge, rows, idx)
    else:
        hits = [None if x is None else judge.alike(*x) for x in rows.variant_inputs(idx)]
    built = iter(rows.build([i for i, h in zip(idx, hits, strict=True) if h is None]))
    for (g, i), hit in zip(order, hits, strict=True):
        if hit is None:
            j = judged[i] = judge(next(built))
            hit = (j.findings, j.handling)
        elif hit[0]:
            shared[i] = hit
        handling[g] = hit[1]
        findings[g] = bool(hit[0])
    copies = {i: int(first[group[i]]) for i in np.flatnonzero(findings[group]).tolist()
              if i not in judged and i not in shared}  # fmt: skip
    # Only the judgements with findings are kept: the others are their group's handling and no findings, built
    # again the same when every row is asked for (and a module tree's parent holds fewer objects).
    kept = {i: j for i, j in judged.items() if j.findings}
    return JudgedRows(rows, kept, group, handling, copies, shared, judge.params)


_ALIKE_MAX = 1 << 16  # entries of a Judge's group memo (Judge.groups); a full memo only stops growing


def _alike_by_key(judge: Judge, rows: Any, idx: list[int]) -> list:
    """judge.alike() of rows idx, through the judge's memo by what the row's variants and facts follow from
    (EntryRows.variant_keys: shape, target name, ftrace site, facts): a module tree's modules repeat the same few
    dozen groups, so most skip building their instructions and the alike key. None where alike answers None or
    the row has no key (built, moved)."""
    memo = judge.groups
    keys = rows.variant_keys(idx)
    params = judge.params
    if params:  # alike() leaves the facts' values out of its own key: a `.cold` part's parent name, a label's
        keys = [_valueless(k, params) for k in keys]
    hits: list = [_MISS] * len(idx)
    todo = []
    for p, key in enumerate(keys):
        if key is None:
            hits[p] = None
            continue
        got = memo.get(key, _MISS)
        if got is _MISS:
            todo.append(p)
        else:
            hits[p] = got
    if todo:
        ins = rows.variant_inputs([idx[p] for p in todo])
        for p, x in zip(todo, ins, strict=True):
            got = hits[p] = None if x is None else judge.alike(*x)
            if len(memo) < _ALIKE_MAX:
                memo[keys[p]] = got
    return hits


_MISS = object()


def _valueless(key: tuple | None, params: tuple[str, ...]) -> tuple | None:
    """A variant_keys key with its facts as alike() keys them (the values after the judge's fact prefixes left out):
    rows alike but for such a value (the function a `.cold` part or a label belongs to) share one alike() answer."""
    if key is not None:
        for f in key[3]:
            if f.startswith(params):
                return (*key[:3], without_values(key[3], params)[0])
    return key


def _alike_by_class(judge: Judge, rows: EntryRows, idx: list[int], cls: list[int]) -> list:
    """judge.alike of each row of idx, as from rows.variant_inputs, with the variants built and read
    (Judge.variants_key) once per variant class cls (_variant_classes), each row with its own facts."""
    reps: dict[int, int] = {}
    for i, c in zip(idx, cls, strict=True):
        if c >= 0:
            reps.setdefault(c, i)
    first = list(reps.values())
    pre = {}
    for c, x in zip(reps, rows.variant_inputs(first), strict=True):
        pre[c] = None if x is None else (x[0], judge.variants_key(x[0]))
    site, ftrace = rows.site_facts, rows.ftrace[idx].tolist()
    hits = []
    for i, c, ft in zip(idx, cls, ftrace, strict=True):
        got = pre.get(c) if c >= 0 else None
        if got is None:  # built or moved past instructions: judged on its Patchpoint
            hits.append(None)
            continue
        facts = site.get(i)  # else the facts variant_inputs gives a row without site facts
        if facts is None:
            facts = rows.base_facts(i) if ft else _NO_FACTS
        hits.append(judge.alike(got[0], facts, got[1]))
    return hits


class MergedRows:
    """The entry rows' and the return rows' judgements as one result's, in the reports' order (address, site,
    name): the same interface as JudgedRows, the order found over the address columns."""

    def __init__(self, entries: JudgedRows, returns: JudgedRows) -> None:
        self.entries, self.returns = entries, returns
        self._order: list[int] | None = None
        self._reported: list[Judgement] | None = None

    @property
    def n(self) -> int:
        return self.entries.n + self.returns.n

    def order(self) -> list[int]:
        """Every row (the entries' first, then the returns', as one index) in the reports' order: a stable sort
        by address and site, then by name where both tie."""
        if self._order is None:
            e, r = self.entries.rows, self.returns.rows
            addr = np.concatenate([np.asarray(e.addr, dtype=np.uint64), r.addr])
            site = np.r_[np.zeros(e.n, dtype=np.int8), np.ones(r.n, dtype=np.int8)]  # entry < return
            perm = np.lexsort((site, addr))
            a, s = addr[perm], site[perm]
            order = perm.tolist()
            tie = np.flatnonzero((a[1:] == a[:-1]) & (s[1:] == s[:-1]))
            for start, stop in _runs(tie.tolist()):
                order[start:stop] = sorted(order[start:stop], key=self._name)
            self._order = order
        return self._order

    def _name(self, g: int) -> str:
        ne = self.entries.n
        return self.entries.rows.name(g) if g < ne else self.returns.rows.name(g - ne)

    def reported(self) -> list[Judgement]:
        """The judgements with findings, in order (found once: a report asks several times)."""
        if self._reported is None:
            self.entries.reported(), self.returns.reported()  # the rows' judgements built (JudgedRows.copies)
            ne = self.entries.n
            mask = np.zeros(self.n, dtype=bool)
            mask[self.entries.reported_rows] = True
            mask[[ne + i for i in self.returns.reported_rows]] = True
            order = np.array(self.order(), dtype=np.int64)
            ej, rj = self.entries.judged, self.returns.judged
            self._reported = [ej[g] if g < ne else rj[g - ne] for g in order[mask[order]].tolist()]
        return self._reported

    def judgements(self) -> list[Judgement]:
        """Every row's judgement, in order."""
        every = self.entries.judgements() + self.returns.judgements()
        return list(map(every.__getitem__, self.order()))

    def name_addrs(self) -> set[tuple[str, int]]:
        return self.entries.name_addrs() | self.returns.name_addrs()

    @property
    def detached(self) -> bool:
        return self.entries.detached and self.returns.detached

    def detach(self, kernel: Any) -> None:
        """Let the image go (EntryRows.detach, ReturnRows.detach); the order is found first."""
        self.order()
        self.entries.rows.detach(kernel)
        self.returns.rows.detach(kernel)

    def verdicts(self) -> dict[Verdict, int]:
        e, r = self.entries.verdicts(), self.returns.verdicts()
        return {v: e[v] + r[v] for v in e}


def _runs(tie: list[int]) -> list[tuple[int, int]]:
    """[start, stop) of each run of positions whose neighbours tie: position p ties with p + 1 for p in tie."""
    runs: list[tuple[int, int]] = []
    for p in tie:
        if runs and runs[-1][1] == p + 1:
            runs[-1] = (runs[-1][0], p + 2)
        else:
            runs.append((p, p + 2))
    return runs

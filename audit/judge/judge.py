"""judge.py: run the rules over every run-time variant of a patchpoint and collect its findings."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace
from operator import attrgetter
from types import SimpleNamespace

from fbt_audit.judge.rule import Rule, Site
from fbt_audit.model.abi import Fixup, Handling
from fbt_audit.model.core import IC, Finding, Insn, Judgement, Patchpoint, Variant
from fbt_audit.table.emulation import EmulationTable, Entry

_NO_FIXUPS = Fixup(0)
_HANDLING_NAMES = {h: h.name.lower() for h in Handling}

# The FBT1xx rules judge the instruction against the table; every other range judges the site.
_INSN_RANGE = "FBT1"
_UNDECODABLE, _NOT_IN_TABLE, _REFUSAL = "FBT111", "FBT110", "FBT114"


class Judge:
    """The rules and one table, prepared once and applied to many patchpoints.

    The rule list is split once into the plans each kind of variant runs, so the hot loop
    neither filters rules nor allocates lists; table lookups are memoised on the fields the
    match reads, because a kernel's ~50,000 entries repeat a few hundred instruction shapes.
    """

    __slots__ = (
        "table", "rules", "_source", "_all", "_invalid", "_ftrace", "_refuse", "_unlisted", "_verdicts", "_parts",
        "_insn_memo", "_insn_facts", "_insn_ids", "_params", "_fields", "_alike", "_read", "groups",
    )  # fmt: skip

    def __init__(self, table: EmulationTable, rules: Iterable[Rule]) -> None:
        self._source = rules  # the caller's object, so judge() can tell when to rebuild
        self.table = table
        self.rules: tuple[Rule, ...] = tuple(sorted(rules, key=lambda r: r.id))
        site_rules = tuple(r for r in self.rules if not r.id.startswith(_INSN_RANGE))

        def only(rule_id: str) -> tuple[Rule, ...]:
            return tuple(r for r in self.rules if r.id == rule_id or r in site_rules)

        self._all = self.rules
        self._invalid = only(_UNDECODABLE)  # undecodable: no table lookup, FBT111 alone
        self._ftrace = site_rules  # probed through ftrace: no int3, no FBT1xx rule
        self._refuse = only(_REFUSAL)  # the table refuses it: FBT114 alone
        self._unlisted = only(_NOT_IN_TABLE)  # no entry, no default: FBT110 alone
        # Whole judgements by what the FBT1xx rules may read: each variant's label and instruction
        # (all but its address), and the patchpoint's facts. Site rules may read anything of the
        # patchpoint (its name, its address), so with any of them selected nothing is memoised,
        # unless each declares `facts_only` (it reads only the facts, the variant and the table).
        facts_only = all(getattr(r, "facts_only", False) for r in site_rules)
        self._verdicts: dict[tuple, tuple[list[Finding], str]] | None = {} if facts_only else None
        # Each plan split into its instruction rules and its site rules: a rule's finding is the first variant it
        # fires on, whatever the other rules find, so the two halves can be judged (and memoised) apart. The
        # instruction half by the variants and the facts its rules read (Rule.facts_read), when all declare them.
        plans = (self._all, self._invalid, self._ftrace, self._refuse, self._unlisted)
        self._parts = {id(p): (tuple(r for r in p if r not in site_rules), tuple(r for r in p if r in site_rules))
                       for p in plans}  # fmt: skip
        reads = [r.facts_read for r in self.rules if r not in site_rules]
        self._insn_facts = None if any(f is None for f in reads) else tuple(sorted({x for f in reads for x in f}))
        self._insn_memo: dict[tuple, list[Finding]] = {}
        self._insn_ids = frozenset(r.id for r in self.rules if r not in site_rules)
        self._params = _param_prefixes(self.rules)
        # Judgements shared by instructions alike in what the rules read of them (Rule.insn_reads) and in their
        # table entry, when every rule declares it: keyed by those, each message given its own instruction's text.
        insn_reads = [r.insn_reads for r in self.rules]
        self._fields = None if any(f is None for f in insn_reads) else tuple(sorted({x for f in insn_reads for x in f}))
        self._alike: dict[tuple, tuple[list[Finding], str]] = {}
        # alike()'s answers by what a row's variants and facts follow from (judge/rows.py: EntryRows.variant_keys)
        self.groups: dict[tuple, tuple[list[Finding], str] | None] = {}
        self._read = attrgetter(*self._fields) if self._fields else _nothing  # those fields of an Insn

    @property
    def memoises(self) -> bool:
        """Whether judgements are memoised by what the rules read (every site rule reads only the facts)."""
        return self._verdicts is not None

    def handling(self, insn: Insn) -> tuple[Entry | None, Handling, Fixup]:
        """The matching entry (or None), the handling and the fixups the table gives insn (memoised there)."""
        return self.table.handling(insn)

    def __call__(self, pp: Patchpoint) -> Judgement:
        memo = self._verdicts
        variants = pp.variants
        if memo is None or not variants:
            return self._judge(pp)
        if self._fields is not None:
            hit = self.alike([(v.label, v.insn) for v in variants], pp.facts)
            if hit is not None:
                return fill(pp, hit, self._params)
        insn = variants[0].insn
        if not insn.classes & IC.INVALID:
            if not self._ftrace and self.table.handling(insn)[1] == Handling.FTRACE:
                return Judgement(pp, [], "ftrace")  # what _judge finds when no site rule runs
        facts, values = pp.facts, None
        if self._params and any(f.startswith(self._params) for f in facts):
            facts, values = without_values(facts, self._params)
        key = (_shape(variants[0]), facts) if len(variants) == 1 else (*map(_shape, variants), facts)
        hit = memo.get(key)
        if hit is None:
            if values is None:
                j = self._split(pp, key)
                if len(memo) < _MEMO_MAX:
                    memo[key] = (j.findings[:], j.handling)
                return j
            # judged once for every value: with the values left out of the facts (a placeholder each), put back below
            j = self._split(replace(pp, facts=facts), key)
            hit = (j.findings, j.handling)
            if len(memo) < _MEMO_MAX:
                memo[key] = hit
        if values is None:
            return Judgement(pp, hit[0][:], hit[1])
        return Judgement(pp, [_with_values(f, values) for f in hit[0]], hit[1])

    def _split(self, pp: Patchpoint, key: tuple) -> Judgement:
        """_judge's judgement from its two halves: the instruction rules' findings memoised by the variants and
        the facts they read, the site rules' judged here; merged by rule id, as _judge orders them."""
        if self._insn_facts is None:
            return self._judge(pp)
        prefixes = self._insn_facts
        ikey = (key[:-1], frozenset(f for f in pp.facts if f.startswith(prefixes))) if prefixes else key[:-1]
        insn = self._insn_memo.get(ikey)
        if insn is None:  # a new instruction half: the whole judged at once, its instruction findings kept
            j = self._judge(pp)
            if len(self._insn_memo) < _MEMO_MAX:
                self._insn_memo[ikey] = [f for f in j.findings if f.rule_id in self._insn_ids]
            return j
        site = self._judge(pp, 1)
        if not insn:
            return site
        return Judgement(pp, sorted(insn + site.findings, key=_rule_id), site.handling)

    @property
    def params(self) -> tuple[str, ...]:
        """The fact prefixes whose values the judge leaves out of its memo keys (fill() puts them back)."""
        return self._params

    @property
    def shares(self) -> bool:
        """Whether alike() answers (every rule declares Rule.insn_reads and every site rule reads only facts)."""
        return self._fields is not None and self._verdicts is not None

    @property
    def reads_shape_only(self) -> bool:
        """Whether the Insn fields the rules read (Rule.insn_reads) are all fields an instruction's encoding and its
        target's class fix (not its address, bytes, target or text): rows alike in those share variants_key()."""
        return self._fields is not None and set(self._fields) <= _SHAPE_FIELDS

    def alike(self, variants: Sequence[tuple[str, Insn]], facts: frozenset[str],
              pre: tuple | None = None) -> tuple[list[Finding], str] | None:  # fmt: skip
        """The judgement of a patchpoint with these (label, instruction) variants and facts, as (findings, handling)
        with a placeholder for each variant's text and each fact value (fill() puts a patchpoint's own back in);
        None when it cannot be shared (an undecodable variant: FBT111 prints its bytes). Shared by every
        patchpoint alike in its labels, the Insn fields the rules read (Rule.insn_reads), its table entries and
        its facts without their values: judged once, on stand-ins with those fields alone, so check() sees nothing
        else. Callers check `shares` first. pre: variants_key(variants), when the caller has it (rows whose
        variants are alike share it)."""
        if pre is None:
            pre = self.variants_key(variants)
        if pre is None or pre is _FTRACE:
            return pre
        vkey, looked = pre
        params = self._params
        if params:
            for f in facts:
                if f.startswith(params):
                    facts = without_values(facts, params)[0]
                    break
        key = (vkey, facts)
        hit = self._alike.get(key)
        if hit is None:
            stand = tuple(_stand_in(k, label, insn, self._fields) for k, (label, insn) in enumerate(variants))
            j = self._judge(SimpleNamespace(facts=facts, variants=stand), looked=looked)
            found = [f if type(f.message) is str else replace(f, message=str(f.message)) for f in j.findings]
            hit = (found, j.handling)
            if len(self._alike) < _MEMO_MAX:
                self._alike[key] = hit
        return hit

    def variants_key(self, variants: Sequence[tuple[str, Insn]]) -> tuple | None:
        """What alike() reads of the variants: (their part of its memo key, each one's table handling); None for an
        undecodable variant, _FTRACE when the first goes through ftrace and no site rule runs (its judgement)."""
        handling, read = self.table.handling, self._read
        looked, key = [], []
        for label, insn in variants:
            if insn.classes & IC.INVALID:
                return None
            e, h, f = hit = handling(insn)
            looked.append(hit)
            key.append((label, read(insn), id(e), h, f))
        if not self._ftrace and looked[0][1] == Handling.FTRACE:
            return _FTRACE  # what _judge finds when no site rule runs
        return tuple(key), looked

    def _judge(self, pp: Patchpoint, part: int | None = None, looked: list | None = None) -> Judgement:
        """Every variant of pp against the table and the rules; `part` 0 or 1: the instruction or the site rules
        of each plan only; `looked`: each variant's table handling, when already looked up."""
        table = self.table
        parts = self._parts
        found: dict[str, Finding] = {}
        disk_handling = ""
        variants: Sequence[Variant] = pp.variants or (Variant("disk", pp.insn),)
        for i, v in enumerate(variants):
            insn = v.insn
            if insn.classes & IC.INVALID:
                entry, h, f = None, Handling.NONE, _NO_FIXUPS
                plan = self._invalid
            else:
                entry, h, f = self.handling(insn) if looked is None else looked[i]
                if h == Handling.FTRACE:
                    plan = self._ftrace
                elif h == Handling.REFUSE:
                    plan = self._refuse
                elif entry is None and h == Handling.NONE:
                    plan = self._unlisted
                else:
                    plan = self._all
            if part is not None:
                plan = parts[id(plan)][part]
            if i == 0:
                disk_handling = _HANDLING_NAMES[h]
            elif disk_handling == "ftrace":
                break  # the probe goes through ftrace: the int3 never meets the run-time forms
            site = None
            for rule in plan:
                if rule.id in found:  # one finding per rule: the first variant that fired keeps it
                    continue
                if site is None:
                    site = Site(pp, v.label, insn, entry, table, h, f)
                msg = rule.check(site)
                if msg is None:
                    continue
                found[rule.id] = Finding(rule.id, rule.level, msg, v.label)
        findings = list(found.values())
        if len(variants) > 1:
            findings.sort(key=_rule_id)
        return Judgement(pp, findings, disk_handling)


_FTRACE: tuple[list[Finding], str] = ([], "ftrace")
_SHAPE_FIELDS = frozenset({"classes", "prefixes", "rex", "opcode", "modrm_off", "mnemonic", "target_class"})


def _stand_in(k: int, label: str, insn: Insn, fields: tuple[str, ...]) -> Variant:
    """Variant k as check() sees it in a shared judgement: the declared Insn fields and a placeholder text."""
    return Variant(label, SimpleNamespace(text=_Text(f"\0t{k}\0"), **{a: getattr(insn, a) for a in fields}))


class _Text(str):
    """A stand-in instruction's text (Judge.alike): a placeholder check() may print (format, join) but not test,
    as Rule.insn_reads promises: comparing or searching it raises instead of judging every instruction alike."""

    def _tested(self, *_args, **_kwargs):
        raise TypeError("a rule tested Insn.text: it must read the fields it tests (Rule.insn_reads), not the text")

    __eq__ = __ne__ = __lt__ = __le__ = __gt__ = __ge__ = __contains__ = _tested
    startswith = endswith = find = rfind = index = rindex = count = split = partition = _tested
    __hash__ = str.__hash__


def _nothing(_insn: Insn) -> None:
    return None


def fill(pp: Patchpoint, judged: tuple[list[Finding], str], params: tuple[str, ...]) -> Judgement:
    """pp's Judgement from Judge.alike's (findings, handling): each placeholder in the messages replaced by pp's own
    variant text or fact value (the judge's fact-value prefixes `params`)."""
    findings, handling = judged
    if not findings:
        return Judgement(pp, [], handling)
    texts = [(f"\0t{k}\0", v.insn.text) for k, v in enumerate(pp.variants)]
    if params and any(f.startswith(params) for f in pp.facts):
        values = without_values(pp.facts, params)[1]
        if values:
            texts += values
    return Judgement(pp, [_with_values(f, texts) for f in findings], handling)


def _param_prefixes(rules: tuple[Rule, ...]) -> tuple[str, ...]:
    """The Rule.fact_params prefixes every rule that may read such a fact declares (so that no rule tests the value
    after them): the facts whose values the judge may leave out of its memo key."""
    out = []
    for p in sorted({p for r in rules for p in r.fact_params}):
        readers = [r for r in rules if r.facts_read is None or any(p.startswith(x) or x.startswith(p)
                                                                    for x in r.facts_read)]  # fmt: skip
        if all(p in r.fact_params for r in readers):
            out.append(p)
    return tuple(out)


def without_values(facts: frozenset[str], prefixes: tuple[str, ...]) -> tuple[frozenset[str], tuple | None]:
    """facts with the value after each prefix replaced by a placeholder, and (placeholder, value) pairs; facts as they
    are (None) when a prefix has two facts or a value holds the placeholder's NUL."""
    out, values = [], []
    for f in facts:
        for k, p in enumerate(prefixes):
            if f.startswith(p):
                mark = f"\0{k}\0"
                if "\0" in f or any(m == mark for m, _v in values):
                    return facts, None
                out.append(p + mark)
                values.append((mark, f[len(p) :]))
                break
        else:
            out.append(f)
    return frozenset(out), tuple(values)


def _with_values(f: Finding, values: tuple) -> Finding:
    """f with each placeholder in its message replaced by its value (without_values)."""
    if "\0" not in f.message:
        return f
    msg = f.message
    for mark, value in values:
        msg = msg.replace(mark, value)
    return Finding(f.rule_id, f.level, msg, f.variant)


def _rule_id(f: Finding) -> str:
    return f.rule_id


_REL = IC.REL_BRANCH | IC.REL_CALL
_MEMO_MAX = 1 << 16


def _shape(v: Variant) -> tuple:
    """A variant's label and every Insn field the rules and the table read, but the address. A relative branch's
    bytes are left out (their displacement is the target minus the address); so are its operands and target
    when the target has a name: the messages print the name (Insn.text), and a module's relocated
    `call __fentry__` then has one shape at every site instead of one per address."""
    i = v.insn
    c = i.classes
    if c & _REL and i.target_name is not None:
        return (v.label, len(i.raw), i.mnemonic, None, i.prefixes, i.rex, i.opcode, i.modrm_off, c, None,
                i.target_name, i.target_class)  # fmt: skip
    return (
        v.label, len(i.raw) if c & _REL else i.raw, i.mnemonic, i.operands, i.prefixes, i.rex, i.opcode,
        i.modrm_off, c, i.target, i.target_name, i.target_class,
    )  # fmt: skip


_JUDGES: dict[tuple, Judge] = {}


def judge_for(table: EmulationTable, rules: list[Rule]) -> Judge:
    """One Judge per (table, rule selection) in a process: its memo of verdicts by shape and facts carries over
    from module to module of a tree (a worker audits hundreds), instead of starting empty for each."""
    key = (id(table), tuple(r.id for r in rules))  # an id reused by another table: j.table is not table
    j = _JUDGES.get(key)
    if j is None or j.table is not table:
        j = _JUDGES[key] = Judge(table, rules)
    return j


# judge() keeps the Judge it built last, so a caller looping over patchpoints with the same
# table and rule list pays for the preparation once. Pass a new list, not a mutated one.
_last: Judge | None = None


def judge(pp: Patchpoint, table: EmulationTable, rules: Iterable[Rule]) -> Judgement:
    """Judge one patchpoint: every variant against the table, every rule once, findings by id."""
    global _last
    j = _last
    if j is None or j.table is not table or j._source is not rules:
        j = _last = Judge(table, rules)
    return j(pp)

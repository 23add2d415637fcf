"""html.py: self-contained HTML (no network, no external assets): the opcode map page and the whole report."""

from __future__ import annotations

import json
from collections.abc import Mapping
from html import escape
from typing import TYPE_CHECKING, Any

from fbt_audit.judge.order import findings, ordered
from fbt_audit.report.common import rule_counts, rules_by_id
from fbt_audit.report.listing import in_order
from fbt_audit.report.opmap import data as map_data
from fbt_audit.report.text import summary_line

if TYPE_CHECKING:
    from fbt_audit.judge.result import AuditResult

# Worst verdict by colour; an empty cell stays blank.
STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222;background:#fff}
h1{font-size:1.3em;margin:0 0 .3em} h2{font-size:1.1em;margin:1.2em 0 .4em}
.meta{color:#555;margin:.2em 0}
table.grid{border-collapse:collapse;font:12px/1.2 ui-monospace,monospace}
table.grid th{padding:2px 5px;color:#555;font-weight:normal}
table.grid td{width:64px;height:44px;border:1px solid #ccc;text-align:center;vertical-align:middle;cursor:pointer}
table.grid td.empty{background:#fafafa;color:#bbb;cursor:default}
td .b{font-weight:bold} td .n,td .h{display:block;font-size:11px} td .h{font-style:italic;color:#333}
.v-unsafe{background:#e06666} .v-deny{background:#f6b26b} .v-refused{background:#cfe2f3} .v-safe{background:#b6d7a8}
td.sel{outline:3px solid #222}
.legend span{display:inline-block;padding:1px 8px;margin-right:6px;border:1px solid #ccc}
table.rows{border-collapse:collapse;font:12px ui-monospace,monospace;margin-top:.4em}
table.rows td,table.rows th{border-bottom:1px solid #eee;padding:2px 8px;text-align:left;white-space:nowrap}
"""

SCRIPT = """
(function(){
var d=JSON.parse(document.getElementById('opmap-data').textContent);
var F=d.patchpointFields, LIMIT=2000;
var ESC={'&':'&amp;','<':'&lt;','>':'&gt;','"':'&quot;'};
function esc(s){return String(s==null?'-':s).replace(/[&<>"]/g,function(c){return ESC[c];});}
function show(b){
  var c=d.cells[parseInt(b,16)], out=document.getElementById('cell-list');
  var prev=document.querySelector('td.sel'); if(prev) prev.classList.remove('sel');
  document.getElementById('c'+b).classList.add('sel');
  var h='<h2>first byte '+b+': '+c.count+' patchpoint'+(c.count==1?'':'s')+
        (d.hitsMerged?', '+c.hits+' hits':'')+'</h2><table class="rows" id="rows-'+b+'"><tr>';
  F.forEach(function(f){h+='<th>'+f+'</th>';}); h+='</tr>';
  c.patchpoints.slice(0,LIMIT).forEach(function(p){
    h+='<tr class="v-'+p[2]+'">'; p.forEach(function(x){h+='<td>'+esc(x)+'</td>';}); h+='</tr>';});
  h+='</table>';
  if(c.patchpoints.length>LIMIT) h+='<p>'+(c.patchpoints.length-LIMIT)+' more in the JSON data</p>';
  out.innerHTML=h;
}
document.getElementById('opmap').addEventListener('click',function(e){
  var td=e.target.closest('td[data-byte]'); if(td) show(td.getAttribute('data-byte'));});
var pick=(location.hash||'').replace('#','');
if(/^[0-9a-f]{2}$/.test(pick)&&d.cells[parseInt(pick,16)].count) show(pick);
})();
"""


def _grid(d: dict[str, Any]) -> str:
    rows = ['<table class="grid" id="opmap"><tr><th></th>']
    rows.extend(f"<th>_{lo:x}</th>" for lo in range(16))
    rows.append("</tr>")
    for hi in range(16):
        rows.append(f"<tr><th>{hi:x}_</th>")
        for lo in range(16):
            c = d["cells"][hi * 16 + lo]
            b = c["byte"]
            if not c["count"]:
                rows.append(f'<td class="empty" id="c{b}"><span class="b">{b}</span></td>')
                continue
            hits = f'<span class="h">{c["hits"]}</span>' if c["hits"] is not None else ""
            title = ", ".join(f"{n} {v}" for v, n in c["verdicts"].items() if n)
            rows.append(
                f'<td class="v-{c["worst"]}" id="c{b}" data-byte="{b}" data-count="{c["count"]}" '
                f'title="{escape(title)}"><span class="b">{b}</span><span class="n">{c["count"]}</span>{hits}</td>'
            )
        rows.append("</tr>")
    rows.append("</table>")
    return "".join(rows)


def _legend() -> str:
    return (
        '<p class="legend">worst verdict: <span class="v-unsafe">unsafe</span><span class="v-deny">deny</span>'
        '<span class="v-refused">refused</span><span class="v-safe">safe</span> '
        "- each cell: first byte, patchpoints, <i>hits</i> (when merged); click for its patchpoints</p>"
    )


def _page(title: str, body: str, d: dict[str, Any]) -> str:
    blob = json.dumps(d, separators=(",", ":")).replace("</", "<\\/")
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        "style-src 'unsafe-inline'; script-src 'unsafe-inline'\">"
        f"<title>{escape(title)}</title><style>{STYLE}</style></head><body>\n{body}\n"
        f'<script type="application/json" id="opmap-data">{blob}</script>\n<script>{SCRIPT}</script>\n'
        "</body></html>\n"
    )


def _meta(d: dict[str, Any]) -> str:
    imgs = "; ".join(
        f"{escape(i['display'])} (release {escape(i['release'] or '-')}, build id {escape(i['buildId'] or '-')})"
        for i in d["images"]
    )
    tabs = ", ".join(f"{escape(t['name'])} ({t['sha256'][:12]})" for t in d["tables"])
    return f'<p class="meta">{imgs}</p><p class="meta">table {tabs}</p>'


def render_map(results: list[AuditResult], counts: Mapping[str, int] | None = None) -> str:
    """`fbt-audit map`: the 16x16 grid of first bytes at every patchpoint; the data is in the page."""
    d = map_data(results, counts)
    body = f'<h1>fbt-audit opcode map</h1>{_meta(d)}{_legend()}{_grid(d)}<div id="cell-list"></div>'
    return _page("fbt-audit opcode map", body, d)


def render_html(results: list[AuditResult], counts: Mapping[str, int] | None = None) -> str:
    """`--format html`: summary, rules, findings (with hits when merged), then the opcode map."""
    rs = ordered(results)
    d = map_data(rs, counts)
    parts = [f"<h1>fbt-audit report</h1>{_meta(d)}", f'<p id="summary">{escape(summary_line(rs))}</p>']
    rc = rule_counts(rs)
    parts.append('<h2>Rules</h2><table class="rows" id="rules"><tr><th>rule</th><th>name</th><th>level</th>'
                 "<th>findings</th><th>summary</th></tr>")  # fmt: skip
    for rid, rule in rules_by_id(rs).items():
        parts.append(
            f"<tr><td>{rid}</td><td>{escape(rule.name)}</td><td>{rule.level.sarif}</td><td>{rc.get(rid, 0)}</td>"
            f"<td>{escape(rule.summary)}</td></tr>"
        )
    parts.append("</table>")
    hit_col = "<th>hits</th>" if counts is not None else ""
    parts.append(
        f'<h2>Findings</h2><table class="rows" id="findings"><tr><th>image</th><th>where</th>{hit_col}'
        "<th>rule</th><th>message</th><th>verdict</th><th>bytes</th></tr>"
    )
    for r in rs:
        for j in in_order(r):
            pp = j.pp
            hits = f"<td>{counts.get(pp.probe_name, 0)}</td>" if counts is not None else ""
            for f in findings(j):
                parts.append(
                    f'<tr class="v-{j.verdict.label}"><td>{escape(r.kernel.display)}</td>'
                    f"<td>{escape(pp.name)}+0x{pp.symoff:x} ({escape(pp.section)}+0x{pp.sec_off:x})</td>{hits}"
                    f"<td>{f.rule_id}</td><td>{escape(f.message)}</td><td>{j.verdict.label}</td>"
                    f"<td>{pp.insn.raw.hex() or '-'}</td></tr>"
                )
    parts.append("</table>")
    parts.append(f'<h2>Opcode map</h2>{_legend()}{_grid(d)}<div id="cell-list"></div>')
    return _page("fbt-audit report", "".join(parts), d)

"""The auditor's report as one self-contained HTML file: inline CSS (screen, phone, print) and
inline SVG charts, no script, no external request. Every value from the ledger is escaped
(a recording id with markup in it shows as text)."""

from __future__ import annotations

import html

from pipeline.archive.evidence.report_data import NEVER, RECENCY, ReportData

COLOURS = {"ok": "#2e7d32", "bad": "#c62828", "warn": "#ef6c00", "muted": "#9e9e9e"}
RECENCY_COLOURS = dict(zip([label for label, _ in RECENCY] + [NEVER, "problem"],
                           ["#2e7d32", "#7cb342", "#fbc02d", "#ef6c00", "#9e9e9e", "#c62828"]))
TABLE_COLUMNS = (("recording_id", "Recording"), ("kind", "Kind"), ("file_name", "File"), ("target", "Target"),
                 ("state", "State"), ("sha256", "SHA-256"), ("uri", "Where"), ("retention", "Retention"),
                 ("verified_at", "Last verified"), ("signed_by", "Signed by"))

CSS = """
:root { color-scheme: light; --ok: #2e7d32; --bad: #c62828; --warn: #ef6c00; --line: #ddd; }
* { box-sizing: border-box; }
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0 auto; padding: 1rem;
       max-width: 1200px; color: #222; }
h1 { font-size: 1.5rem; margin: .2rem 0; } h2 { font-size: 1.15rem; margin-top: 2rem;
     border-bottom: 2px solid var(--line); padding-bottom: .2rem; }
.meta { color: #555; font-size: .9rem; }
.cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(150px, 1fr)); gap: .6rem; margin: 1rem 0; }
.card { border: 1px solid var(--line); border-radius: 6px; padding: .6rem .8rem; }
.card b { display: block; font-size: 1.5rem; } .card.bad b { color: var(--bad); } .card.ok b { color: var(--ok); }
.scroll { overflow-x: auto; } table { border-collapse: collapse; width: 100%; font-size: .85rem; }
th, td { border-bottom: 1px solid var(--line); padding: .3rem .45rem; text-align: left; vertical-align: top; }
th { background: #f5f5f5; } td.hash, td.uri { font-family: ui-monospace, monospace; word-break: break-all; }
td.hash { min-width: 17ch; font-size: .78rem; } td.uri { min-width: 16ch; font-size: .78rem; }
.state-archived { color: var(--ok); } .state-missing, .state-mismatch, .state-failed, .state-lost { color: var(--bad);
  font-weight: 600; }
svg { max-width: 100%; height: auto; } svg text { font: 11px system-ui, sans-serif; fill: #333; }
.legend span { display: inline-block; margin-right: 1rem; font-size: .85rem; }
.legend i { display: inline-block; width: .8rem; height: .8rem; margin-right: .3rem; vertical-align: -1px; }
.note { color: #555; font-size: .85rem; }
@media (max-width: 640px) {
  body { padding: .5rem; font-size: 14px; } th, td { padding: .25rem; }
  table.copies thead { display: none; } table.copies tr { display: block; border-bottom: 2px solid var(--line); }
  table.copies td { display: block; border: 0; } table.copies td::before { content: attr(data-label) ": ";
  font-weight: 600; }
}
@media print {
  body { max-width: none; font-size: 10pt; } .scroll { overflow: visible; } h2 { break-after: avoid; }
  tr, .card, svg { break-inside: avoid; } a { color: inherit; text-decoration: none; }
}
"""


def e(value) -> str:
    """Escaped text of a value (a dash for nothing)."""
    return "–" if value is None or value == "" else html.escape(str(value), quote=True)


def render(data: ReportData) -> str:
    complete = sum(ok for _day, ok, _ in data.days)
    incomplete = sum(bad for _day, _, bad in data.days)
    cards = [("Recordings", complete + incomplete, ""), ("Archived at every target", complete, "ok"),
             ("Not archived everywhere", len(data.missing), "bad" if data.missing else "ok"),
             ("Lost", len(data.lost), "bad" if data.lost else "ok"),
             ("At risk", len(data.at_risk), "bad" if data.at_risk else "ok"),
             ("Copy rows", len(data.rows), "")]
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<title>rtk-archive: auditor's report</title>", f"<style>{CSS}</style></head><body>",
        "<header><h1>rtk-archive: auditor's report</h1>",
        f'<p class="meta">Generated <time>{e(data.generated_at)}</time> from the ledger {e(data.ledger)}; '
        f"targets: {e(', '.join(data.targets))}. States are as the ledger recorded them: `verify` and "
        "`audit verify` check them again.</p></header>",
        '<section class="cards" id="summary">' + "".join(
            f'<div class="card {cls}"><b>{e(value)}</b>{e(label)}</div>' for label, value, cls in cards) + "</section>",
        _coverage(data), _deadlines(data), _recency(data), _retention(data), _evidence(data), _table(data),
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


def _coverage(data: ReportData) -> str:
    width, bar_h, gap, label_w = 640, 18, 6, 90
    most = max((ok + bad for _d, ok, bad in data.days), default=0) or 1
    scale = (width - label_w - 40) / most
    bars = []
    for i, (day, ok, bad) in enumerate(data.days):
        y = i * (bar_h + gap)
        ok_w, bad_w = ok * scale, bad * scale
        bars.append(f'<text x="0" y="{y + 13}">{e(day)}</text>'
                    f'<rect class="bar ok" x="{label_w}" y="{y}" width="{ok_w:.1f}" height="{bar_h}" '
                    f'fill="{COLOURS["ok"]}"><title>{e(day)}: {ok} archived at every target</title></rect>'
                    f'<rect class="bar missing" x="{label_w + ok_w:.1f}" y="{y}" width="{bad_w:.1f}" height="{bar_h}" '
                    f'fill="{COLOURS["bad"]}"><title>{e(day)}: {bad} not archived everywhere</title></rect>'
                    f'<text x="{label_w + ok_w + bad_w + 4:.1f}" y="{y + 13}">{ok}/{ok + bad}</text>')
    height = max(len(data.days) * (bar_h + gap), bar_h)
    chart = (f'<svg id="coverage-chart" role="img" aria-label="Recordings per day archived at every target" '
             f'viewBox="0 0 {width} {height}" width="{width}" height="{height}">{"".join(bars)}</svg>')
    missing = "".join(f"<tr><td>{e(m['id'])}</td><td class=\"state-{e(m['state'])}\">{e(m['state'])}</td>"
                      f"<td>{e(', '.join(m['lacking']))}</td><td>{e(m['reason'])}</td></tr>" for m in data.missing)
    table = ('<div class="scroll"><table id="missing"><thead><tr><th>Recording</th><th>State</th><th>Not archived'
             f"</th><th>Reason</th></tr></thead><tbody>{missing}</tbody></table></div>" if data.missing
             else '<p class="note">Every recording in the ledger is archived at every target.</p>')
    legend = _legend({"archived at every target": COLOURS["ok"], "not archived everywhere": COLOURS["bad"]})
    return f'<section id="coverage"><h2>Coverage per day</h2>{legend}{chart}<h3>What is missing</h3>{table}</section>'


def _deadlines(data: ReportData) -> str:
    lost = "".join(f"<tr><td>{e(r['id'])}</td><td>{e(r['meeting'])}</td><td>{e(r['invoked'])}</td>"
                   f"<td>{e(r['deadline'])}</td><td>{e(r['reason'])}</td></tr>" for r in data.lost)
    risk = "".join(f"<tr><td>{e(r['id'])}</td><td>{e(r['meeting'])}</td><td>{e(r['deadline'])}</td>"
                   f"<td>{e(r['state'])}</td></tr>" for r in data.at_risk)
    body = ['<section id="deadlines"><h2>Deadlines</h2>',
            "<p class=\"note\">RealtimeKit deletes a recording 7 days after it is made; one not archived by then "
            "is lost.</p>"]
    body.append('<div class="scroll"><table id="lost"><thead><tr><th>Lost recording</th><th>Meeting</th><th>Invoked'
                f"</th><th>Deadline</th><th>Why</th></tr></thead><tbody>{lost}</tbody></table></div>" if lost
                else '<p class="note">No recording was lost.</p>')
    body.append('<div class="scroll"><table id="at-risk"><thead><tr><th>At risk</th><th>Meeting</th><th>Deadline'
                f"</th><th>State</th></tr></thead><tbody>{risk}</tbody></table></div>" if risk
                else '<p class="note">No recording is at risk now.</p>')
    return "".join(body) + "</section>"


def _recency(data: ReportData) -> str:
    width, bar_h, gap, label_w = 640, 22, 8, 110
    buckets = [label for label, _ in RECENCY] + [NEVER, "problem"]
    rows = []
    for i, target in enumerate(data.targets):
        counts = data.recency.get(target, {})
        total = sum(counts.values()) or 1
        x, y = float(label_w), i * (bar_h + gap)
        rows.append(f'<text x="0" y="{y + 15}">{e(target)}</text>')
        for bucket in buckets:
            w = counts.get(bucket, 0) / total * (width - label_w)
            if w:
                rows.append(f'<rect class="bar recency" x="{x:.1f}" y="{y}" width="{w:.1f}" height="{bar_h}" '
                            f'fill="{RECENCY_COLOURS[bucket]}"><title>{e(target)}: {counts[bucket]} copies verified '
                            f"{e(bucket)}</title></rect>")
            x += w
    height = max(len(data.targets) * (bar_h + gap), bar_h)
    chart = (f'<svg id="recency-chart" role="img" aria-label="When each target\'s copies were last verified" '
             f'viewBox="0 0 {width} {height}" width="{width}" height="{height}">{"".join(rows)}</svg>')
    legend = _legend({(f"verified {b}" if b not in (NEVER, "problem") else
                       ("never verified" if b == NEVER else "missing, altered or failed")): RECENCY_COLOURS[b]
                      for b in buckets})
    return f'<section id="recency"><h2>Verification recency per target</h2>{legend}{chart}</section>'


def _retention(data: ReportData) -> str:
    rows = "".join(
        f"<tr><td>{e(t)}</td><td>{e(r['copies'])}</td>"
        f"<td>{e(', '.join(f'{mode}: {n}' for mode, n in sorted(r['modes'].items())))}</td>"
        f"<td>{e(r['legal_hold'])}</td><td>{e(r['earliest_until'])}</td><td>{e(r['latest_until'])}</td></tr>"
        for t, r in data.retention.items())
    return ('<section id="retention"><h2>Retention per target</h2><div class="scroll"><table id="retention-table">'
            "<thead><tr><th>Target</th><th>Copies</th><th>Retention modes</th><th>Legal hold</th>"
            f"<th>Earliest retain-until</th><th>Latest retain-until</th></tr></thead><tbody>{rows}</tbody></table>"
            "</div></section>")


def _evidence(data: ReportData) -> str:
    s, t = data.signatures, data.timestamps
    keys = ", ".join(f"key {kid}: {n}" for kid, n in sorted(s["keys"].items())) or "none"
    unsigned = s["manifests"] - s["signed"]
    stamped = (f"{t['tokens']} tokens; the audit log up to line {e(t['latest_lines'])} was time-stamped at "
               f"{e(t['latest_time'])}" if t["tokens"] else "no token")
    failed = f"; {t['failed']} requests failed (last: {e(t['last_error'])})" if t["failed"] else ""
    return ('<section id="evidence"><h2>Signatures and timestamps</h2><ul>'
            f'<li id="signatures">Manifests: {e(s["manifests"])}, signed: {e(s["signed"])} ({e(keys)})'
            f'{f"; <b>{unsigned} unsigned</b>" if unsigned else ""}.</li>'
            f'<li id="timestamps">RFC 3161 timestamps: {"configured" if t["configured"] else "not configured"}; '
            f"{stamped}{failed}.</li></ul>"
            '<p class="note">As recorded in the ledger. `verify` re-checks every signature with the public keys; '
            "`audit verify` re-checks every token against the TSA's certificate and the log.</p></section>")


def _table(data: ReportData) -> str:
    head = "".join(f"<th>{e(label)}</th>" for _key, label in TABLE_COLUMNS)
    body = []
    for row in data.rows:
        values = dict(row, retention=_retention_text(row),
                      verified_at=" ".join(filter(None, [row["verified_at"], row["verify_result"]])) or None)
        cells = []
        for key, label in TABLE_COLUMNS:
            css = {"sha256": "hash", "uri": "uri", "state": f"state-{row['state']}"}.get(key, "")
            cells.append(f'<td class="{e(css)}" data-label="{e(label)}">{e(values.get(key))}</td>')
        body.append(f"<tr>{''.join(cells)}</tr>")
    return ('<section id="copies-section"><h2>Every recording file at every target</h2><div class="scroll">'
            f'<table class="copies" id="copies"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody>'
            "</table></div></section>")


def _retention_text(row: dict) -> str | None:
    parts = [row["retention_mode"], f"until {row['retention_until']}" if row["retention_until"] else None,
             "legal hold" if row["legal_hold"] else None]
    return " ".join(p for p in parts if p) or None


def _legend(items: dict[str, str]) -> str:
    return '<p class="legend">' + "".join(f'<span><i style="background:{colour}"></i>{e(label)}</span>'
                                          for label, colour in items.items()) + "</p>"

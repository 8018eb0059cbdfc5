"""``report.html``: one self-contained page (inline CSS, inline base64 PNG figures, no scripts, no
external resources) rendered from ``report.json``'s content. Every number on the page is a value
of the JSON shown through :func:`neurotomy.report.record.format_value`; nothing is computed here.

Example:
    >>> from neurotomy.report.record import section, add_number
    >>> s = section("x", "X"); add_number(s, "acc", "accuracy", 0.5, "pct")
    >>> page = render_html({"model": "m", "verdict": {"items": [], "details": []}, "sections": [s]})
    >>> "50.00 %" in page and page.startswith("<!DOCTYPE html>")
    True
"""

from __future__ import annotations

import json
import os
from html import escape
from pathlib import Path

from neurotomy.files import atomic_write, write_json
from neurotomy.report.record import format_value

CSS = """
:root { --ink:#1a202c; --muted:#5a6475; --line:#e2e8f0; --bg:#f7f8fa; --card:#ffffff;
        --accent:#2b6cb0; --orange:#dd6b20; --good:#2f855a; --bad:#c53030; }
* { box-sizing: border-box; }
body { margin:0; background:var(--bg); color:var(--ink);
       font: 15px/1.55 -apple-system, "Segoe UI", "Helvetica Neue", Arial, "Noto Sans", "DejaVu Sans", sans-serif; }
main { max-width: 1120px; margin: 0 auto; padding: 28px 28px 60px; }
header h1 { font-size: 26px; margin: 0 0 4px; letter-spacing: -0.01em; }
header .sub { color: var(--muted); font-size: 14px; }
nav { margin: 14px 0 22px; display:flex; flex-wrap:wrap; gap:6px; }
nav a { font-size: 13px; color: var(--accent); text-decoration:none; background:#e8f0fa; padding:3px 10px;
        border-radius: 12px; }
.verdict { background: var(--card); border:1px solid var(--line); border-left: 6px solid var(--accent);
           border-radius: 10px; padding: 18px 22px; margin: 8px 0 26px; box-shadow: 0 1px 3px rgba(0,0,0,.05); }
.verdict .headline { font-size: 21px; margin: 0 0 12px; font-weight: 500; }
.verdict .headline b { color: var(--accent); font-weight: 700; white-space: nowrap; }
.verdict .headline b.neg { color: var(--bad); }
.verdict .headline b.pos { color: var(--good); }
.verdict .notes { display:flex; flex-wrap:wrap; gap: 4px 22px; color: var(--muted); font-size: 13px; margin:0;
                  padding:0; list-style:none; }
section { background: var(--card); border:1px solid var(--line); border-radius: 10px; padding: 18px 22px 20px;
          margin: 0 0 22px; box-shadow: 0 1px 2px rgba(0,0,0,.03); }
section h2 { font-size: 19px; margin: 0 0 6px; }
section p.lead { color: var(--muted); margin: 0 0 14px; font-size: 14px; max-width: 860px; }
.cards { display:grid; grid-template-columns: repeat(auto-fill, minmax(170px, 1fr)); gap: 10px; margin: 0 0 16px; }
.card { background: var(--bg); border:1px solid var(--line); border-radius: 8px; padding: 10px 12px; }
.card .value { font-size: 20px; font-weight: 650; font-variant-numeric: tabular-nums; }
.card .label { font-size: 12px; color: var(--muted); }
h3 { font-size: 14px; margin: 16px 0 6px; color: var(--ink); text-transform: uppercase; letter-spacing: .04em; }
.table-wrap { overflow-x: auto; max-height: 460px; overflow-y: auto; border:1px solid var(--line); border-radius: 6px; }
table { border-collapse: collapse; width: 100%; font-size: 13px; }
th, td { padding: 5px 10px; border-bottom: 1px solid var(--line); text-align: left; white-space: nowrap; }
th { background: #f1f4f8; font-weight: 600; position: sticky; top: 0; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
tr:last-child td { border-bottom: none; }
tbody tr:hover { background: #fafbfd; }
.note { color: var(--muted); font-size: 12px; margin: 4px 0 0; }
.figures { display:grid; grid-template-columns: repeat(auto-fit, minmax(420px, 1fr)); gap: 16px; margin-top: 16px; }
figure { margin: 0; background: #fff; border:1px solid var(--line); border-radius: 8px; padding: 10px; }
figure.wide { grid-column: 1 / -1; }
figure img { max-width: 100%; height: auto; display:block; margin: 0 auto; }
figcaption { font-size: 12px; color: var(--muted); margin-top: 6px; text-align: center; }
footer { color: var(--muted); font-size: 12px; text-align:center; margin-top: 30px; }
"""


def _value_html(value, fmt: str, css: str = "") -> str:
    cls = f' class="{css}"' if css else ""
    return f"<span{cls}>{escape(format_value(value, fmt))}</span>"


def _verdict_html(report: dict) -> str:
    parts = []
    for item in report["verdict"]["items"]:
        value = item["value"]
        tone = ""
        if item["format"] == "pt" and value is not None:
            tone = " neg" if value < -0.005 else " pos" if value > 0.005 else ""
        parts.append(f'{escape(item["label"])} <b class="v{tone}" data-key="{escape(item["key"])}" '
                     f'title="{escape(item.get("note", ""))}">{escape(format_value(value, item["format"]))}</b>')
    notes = "".join(f'<li>{escape(d["label"])}: <b class="v" data-key="{escape(d["key"])}">'
                    f'{escape(format_value(d["value"], d["format"]))}</b></li>' for d in report["verdict"]["details"])
    notes += "".join(f'<li><i>{escape(i["label"])}</i> = {escape(i.get("note", ""))}</li>' for i in report["verdict"]["items"])
    return (f'<div class="verdict" id="verdict"><p class="headline">{", ".join(parts)}</p>'
            f'<ul class="notes">{notes}</ul></div>')


def _table_html(table: dict) -> str:
    cols = table["columns"]
    head = "".join(f'<th class="{"" if c["format"] == "text" else "num"}">{escape(c["label"])}</th>' for c in cols)
    body = []
    for row in table["rows"]:
        cells = "".join(f'<td class="{"" if c["format"] == "text" else "num"}">{escape(format_value(v, c["format"]))}</td>'
                        for c, v in zip(cols, row))
        body.append(f"<tr>{cells}</tr>")
    note = f'<p class="note">{escape(table["note"])}</p>' if table.get("note") else ""
    return (f'<h3>{escape(table["title"])}</h3><div class="table-wrap"><table><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table></div>{note}')


def _section_html(sec: dict) -> str:
    cards = "".join(f'<div class="card" data-key="{escape(n["key"])}"><div class="value">'
                    f'{escape(format_value(n["value"], n["format"]))}</div><div class="label">{escape(n["label"])}'
                    f'</div></div>' for n in sec["numbers"])
    figures = "".join(f'<figure{" class=wide" if f.get("wide") else ""}><img alt="{escape(f["title"])}" src="data:image/png;base64,{f["png_base64"]}">'
                      f'<figcaption>{escape(f["title"])}{" — " + escape(f["caption"]) if f.get("caption") else ""}'
                      f'</figcaption></figure>' for f in sec["figures"])
    return (f'<section id="sec-{escape(sec["id"])}" data-section="{escape(sec["id"])}"><h2>{escape(sec["title"])}</h2>'
            f'{"<p class=lead>" + escape(sec["text"]) + "</p>" if sec.get("text") else ""}'
            f'{"<div class=cards>" + cards + "</div>" if cards else ""}'
            f'{"".join(_table_html(t) for t in sec["tables"])}'
            f'{"<div class=figures>" + figures + "</div>" if figures else ""}</section>')


def render_html(report: dict) -> str:
    """The report page for a report dict (as read back from ``report.json``)."""
    title = f"neurotomy dissection — {report.get('model', '')}"
    sub = " · ".join(escape(str(x)) for x in (
        report.get("arch"), report.get("dataset"),
        f"budget {report['budget']['name']}" if "budget" in report else None,
        f"seed {report['seed']}" if "seed" in report else None) if x)
    nav = "".join(f'<a href="#sec-{escape(s["id"])}">{escape(s["title"])}</a>' for s in report["sections"])
    body = "".join(_section_html(s) for s in report["sections"])
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<title>{escape(title)}</title><style>{CSS}</style></head><body><main>'
            f'<header><h1>{escape(title)}</h1><div class="sub">{sub}</div></header>'
            f'{_verdict_html(report)}<nav>{nav}</nav>{body}'
            f'<footer>Written by neurotomy from report.json; every number above is a value of that file.</footer>'
            f'</main></body></html>\n')


def write_report(report: dict, out_dir: str | os.PathLike) -> tuple[Path, Path]:
    """Write ``report.json``, then render ``report.html`` from the JSON as written (atomically both)."""
    out_dir = Path(out_dir)
    json_path = write_json(out_dir / "report.json", report)
    page = render_html(json.loads(json_path.read_text()))
    html_path = atomic_write(out_dir / "report.html", lambda tmp: tmp.write_text(page, encoding="utf-8"))
    return json_path, html_path

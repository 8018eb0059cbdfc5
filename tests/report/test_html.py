"""Every number report.html shows is a value of report.json (verdict, cards, tables, figures)."""

import json
from html.parser import HTMLParser

import pytest

# how each format is displayed: value × scale, rounded to this many decimals (independent of the code)
DISPLAY = {"pct": (100, 2), "pt": (100, 2), "ratio": (1, 2), "float3": (1, 3), "float1": (1, 1), "ms": (1, 2), "seconds": (1, 2),
           "mb": (1e-6, 3), "int": (1, 0)}


class ReportPage(HTMLParser):
    """Collects the verdict values, and per section its cards, table cells and image sources."""

    def __init__(self):
        super().__init__()
        self.verdict, self.sections, self.external = {}, [], []
        self._key = self._text = None
        self._card = self._cell = False
        self._row = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        for name in ("src", "href"):
            if a.get(name, "").startswith(("http:", "https:", "//")):
                self.external.append(a[name])
        if tag in ("script", "link", "iframe"):
            self.external.append(tag)
        if tag == "section":
            self.sections.append({"id": a["data-section"], "cards": [], "tables": [], "images": []})
        elif tag == "b" and "data-key" in a:
            self._key, self._text = a["data-key"], ""
        elif tag == "div" and a.get("class") == "card":
            self.sections[-1]["cards"].append([a["data-key"], ""])
        elif tag == "div" and a.get("class") == "value":
            self._card = True
        elif tag == "table":
            self.sections[-1]["tables"].append([])
        elif tag == "tr":
            self._row = []
        elif tag == "td":
            self._cell, self._text = True, ""
        elif tag == "img":
            self.sections[-1]["images"].append(a["src"])

    def handle_endtag(self, tag):
        if tag == "b" and self._key is not None:
            self.verdict[self._key] = self._text
            self._key = None
        elif tag == "div" and self._card:
            self._card = False
        elif tag == "td":
            self._row.append(self._text)
            self._cell = False
        elif tag == "tr" and self._row:
            self.sections[-1]["tables"][-1].append(self._row)
            self._row = None

    def handle_data(self, data):
        if self._key is not None or self._cell:
            self._text += data
        if self._card:
            self.sections[-1]["cards"][-1][1] += data


def shown_equals(text: str, value, fmt: str) -> bool:
    text = text.strip()
    if value is None:
        return text == "—"
    if fmt == "text":
        return text == str(value)
    number = float(text.replace("−", "-").replace(",", "").replace("+", "").rstrip("%×ptmsMB ").strip())
    scale, decimals = DISPLAY[fmt]
    return abs(number - value * scale) <= 0.5 * 10 ** -decimals + 1e-9


@pytest.fixture(scope="module")
def page(tiny_report_dir):
    parser = ReportPage()
    parser.feed((tiny_report_dir / "report.html").read_text(encoding="utf-8"))
    return parser


def test_verdict_values_come_from_json(page, tiny_report):
    items = tiny_report["verdict"]["items"] + tiny_report["verdict"]["details"]
    assert {i["key"] for i in items} == set(page.verdict)
    for item in items:
        assert shown_equals(page.verdict[item["key"]], item["value"], item["format"]), item
    # and the verdict is the pruning section's own record
    pruning = next(s for s in tiny_report["sections"] if s["id"] == "pruning")
    numbers = {n["key"]: n["value"] for n in pruning["numbers"]}
    verdict = {i["key"]: i["value"] for i in items}
    assert verdict["params_ratio"] == numbers["params_ratio"]
    assert verdict["speedup"] == numbers.get("speedup_batch64")  # the tiny budget measures no latency: both None
    assert verdict["accuracy_change"] == pytest.approx(numbers["accuracy_change"])
    explanations = next(s for s in tiny_report["sections"] if s["id"] == "explanations")
    assert verdict["reasons_agreement"] == explanations["numbers"][0]["value"]


def test_every_card_table_cell_and_figure_comes_from_json(page, tiny_report):
    assert [s["id"] for s in page.sections] == [s["id"] for s in tiny_report["sections"]]
    checked = 0
    for html_sec, sec in zip(page.sections, tiny_report["sections"]):
        assert [k for k, _ in html_sec["cards"]] == [n["key"] for n in sec["numbers"]]
        for (_, text), number in zip(html_sec["cards"], sec["numbers"]):
            assert shown_equals(text, number["value"], number["format"]), (sec["id"], number, text)
            checked += 1
        assert len(html_sec["tables"]) == len(sec["tables"])
        for html_rows, table in zip(html_sec["tables"], sec["tables"]):
            assert len(html_rows) == len(table["rows"]), table["title"]
            for html_row, row in zip(html_rows, table["rows"]):
                for text, value, column in zip(html_row, row, table["columns"]):
                    assert shown_equals(text, value, column["format"]), (sec["id"], table["title"], column, text)
                    checked += 1
        assert html_sec["images"] == [f"data:image/png;base64,{f['png_base64']}" for f in sec["figures"]]
    assert checked > 100


def test_page_is_self_contained(page, tiny_report_dir):
    html = (tiny_report_dir / "report.html").read_text(encoding="utf-8")
    assert page.external == [] and "url(" not in html
    assert html.count("<img") == sum(len(s["images"]) for s in page.sections) >= 8


def test_the_json_parses_back_to_the_same_report(tiny_report_dir, tiny_report):
    from neurotomy.report.html import render_html

    html = (tiny_report_dir / "report.html").read_text(encoding="utf-8")
    assert render_html(json.loads((tiny_report_dir / "report.json").read_text())) == html

"""The HTML evaluation report: escaping and determinism in Python, filters and rendering in a real headless Chromium."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from seedr1.evaluate.report import MAX_FRAMES, render_html_report, write_html_report

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
PWNED = "<script>window.__pwned = 1</script><img src=x onerror='window.__pwned = 2'>"

# sample_id, level, domain, correct, consistent
ROWS = [
    ("s1", "L1", "Daily life", True, True),
    ("s2", "L2", "Hobbies", False, True),
    ("s3", "L2", "Work", False, False),
    ("s4", "L3", "Recreation", True, False),
    ("s5", "L3", "Daily life", False, None),
    ("s6", "L2", "Daily life", True, True),
]


def _items() -> list[dict]:
    rng = np.random.default_rng(0)
    items = []
    for k, (sid, level, domain, correct, consistent) in enumerate(ROWS):
        gold = "ABCD"[k % 4]
        chosen = gold if correct else ("ABCD"[(k + 1) % 4] if sid != "s5" else None)
        think = f"I see step {k}; {PWNED if sid == 's3' else 'the next action follows'}."
        items.append({
            "sample_id": sid, "task_level": level, "domain": domain,
            "question": f"What is the next action for goal {k}?",
            "options": [f"option {x} of {sid}" for x in "ABCD"], "gold_letter": gold,
            "response": f"<think>{think}</think><answer>{chosen or ''}</answer>", "answer_letter": chosen,
            "correct": correct, "consistent": consistent,
            "frames": rng.integers(0, 256, size=(12 if k % 2 else 3, 40, 64, 3), dtype=np.uint8),
            "image": rng.integers(0, 256, size=(300, 200, 3), dtype=np.uint8) if k != 5 else None,
        })
    return items


def _tally(flags: list[bool]) -> dict:
    return {"accuracy": sum(flags) / len(flags), "n": len(flags), "correct": sum(flags)}


def _summary(items: list[dict]) -> dict:
    def of(key, value):
        return _tally([it["correct"] for it in items if it[key] == value])
    return {
        "model": "tiny-qwen2-vl", **_tally([it["correct"] for it in items]),
        "by_level": {lv: of("task_level", lv) for lv in ("L1", "L2", "L3")},
        "by_domain": {d: of("domain", d) for d in ("Daily life", "Hobbies", "Recreation", "Work")},
        "l3_by_domain": {d: _tally([it["correct"] for it in items if it["task_level"] == "L3" and it["domain"] == d])
                         for d in ("Daily life", "Recreation")},  # the L3 items' domains
        "missing": [], "reasoning": {"format_rate": 1.0, "mean_reasoning_chars": 42.5, "consistency_rate": 0.6},
    }


def test_text_is_escaped_and_output_deterministic():
    items = _items()
    items[0]["question"] = "Is <b>this</b> & that?"
    items[0]["options"][1] = "</li><script>alert(1)</script>"
    html1 = render_html_report(_summary(items), items, title="<script>t</script>")
    assert "<script>window.__pwned" not in html1 and "onerror='window" not in html1
    assert "&lt;script&gt;window.__pwned = 1&lt;/script&gt;" in html1
    assert "<script>alert(1)</script>" not in html1 and "&lt;script&gt;alert(1)&lt;/script&gt;" in html1
    assert "Is &lt;b&gt;this&lt;/b&gt; &amp; that?" in html1
    assert html1.count("<script>") == 1  # only the report's own filter script
    assert render_html_report(_summary(items), items, title="<script>t</script>") == html1


def test_missing_summary_keys_render():
    html_text = render_html_report({}, [])
    assert "Showing 0 of 0" in html_text and "id=summary" in html_text


def _chromium() -> str | None:
    for candidate in ("/usr/bin/chromium", shutil.which("chromium"), shutil.which("chromium-browser")):
        if candidate and Path(candidate).exists():
            return candidate
    return None


@pytest.fixture(scope="module")
def browser():
    exe = _chromium()
    if exe is None:
        pytest.skip("no chromium binary (/usr/bin/chromium); ./setup.sh installs Debian's chromium when it can")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS)
        yield b
        b.close()


def _visible_ids(page) -> list[str]:
    return page.eval_on_selector_all(
        ".card", "cs => cs.filter(c => c.offsetParent !== null).map(c => c.dataset.sampleId)")


def test_report_in_headless_chromium(browser, tmp_path):
    items = _items()
    path = write_html_report(tmp_path / "report" / "index.html", _summary(items), items, title="Eval of tiny")
    page = browser.new_page()
    errors, requests = [], []
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("request", lambda req: requests.append(req.url))
    page.goto(path.resolve().as_uri())
    page.wait_for_load_state("load")

    assert page.title() == "Eval of tiny"
    assert page.text_content("#count") == "Showing 6 of 6"
    assert _visible_ids(page) == [r[0] for r in ROWS]
    # summary table: L1, L2, L3's Daily life, Hobbies, Recreation, Work (L3 questions only), L3 overall, Overall
    cells = [t.split("\n")[0] for t in page.eval_on_selector_all("#summary tr:last-child td",
                                                               "tds => tds.map(td => td.innerText)")]
    assert cells == ["100.0", "33.3", "0.0", "\u2013", "100.0", "\u2013", "50.0", "50.0"]
    assert "3/6" in page.inner_text("#summary") and "tiny-qwen2-vl" in page.inner_text("body")
    assert page.inner_text("#reasoning").split()[-3:] == ["1.000", "42.5", "0.600"]

    # thumbnails: decoded, at most MAX_FRAMES frames + the observation, none wider than 128 px
    s2 = page.locator(".card[data-sample-id=s2] img")
    assert s2.count() == MAX_FRAMES + 1
    sizes = page.eval_on_selector_all("img", "is => is.map(i => [i.complete, i.naturalWidth, i.naturalHeight])")
    assert all(ok and 0 < w <= 128 and 0 < h <= 128 for ok, w, h in sizes)
    # the gold and the chosen option are marked; injected markup stayed text
    assert page.get_attribute(".card[data-sample-id=s2] li.gold", "data-letter") == "B"
    assert page.get_attribute(".card[data-sample-id=s2] li.chosen", "data-letter") == "C"
    assert page.evaluate("window.__pwned === undefined")
    assert "<script>window.__pwned" in page.inner_text(".card[data-sample-id=s3] .reasoning")

    page.select_option("#f-result", "false")
    assert _visible_ids(page) == ["s2", "s3", "s5"]
    assert page.text_content("#count") == "Showing 3 of 6"
    page.select_option("#f-level", "L2")
    assert _visible_ids(page) == ["s2", "s3"]
    assert page.text_content("#count") == "Showing 2 of 6"
    page.check("#f-inconsistent")
    assert _visible_ids(page) == ["s3"]
    page.select_option("#f-result", "")
    page.select_option("#f-level", "")
    assert _visible_ids(page) == ["s3", "s4"]
    page.uncheck("#f-inconsistent")
    page.select_option("#f-domain", "Daily life")
    assert _visible_ids(page) == ["s1", "s5", "s6"]
    assert page.text_content("#count") == "Showing 3 of 6"

    assert errors == []
    assert all(url.startswith(("file:", "data:")) for url in requests), requests
    page.close()


def _summary_cells(summary: dict) -> list[str]:
    import re

    table = re.search(r"<table id=summary>(.*?)</table>", render_html_report(summary, [])).group(1)
    return re.findall(r"<td>(.*?)</td>", table)


def test_l3_domain_columns_are_l3_questions_only():
    """The L3 columns are the paper's: L3 questions by domain (l3_by_domain), not every level's (by_domain)."""
    def tally(correct, n):
        return {"accuracy": correct / n, "n": n, "correct": correct}

    summary = {"accuracy": 0.5, "n": 10, "correct": 5, "by_level": {"L1": tally(3, 4), "L2": tally(1, 2),
                                                                    "L3": tally(1, 4)},
               "by_domain": {d: tally(2, 4) for d in ("Daily life", "Hobbies", "Recreation", "Work")},
               "l3_by_domain": {"Daily life": tally(1, 1), "Work": tally(0, 3)}}
    cells = _summary_cells(summary)
    assert cells[2:6] == ["100.0<br><small>1/1</small>", "&ndash;", "&ndash;", "0.0<br><small>0/3</small>"]


def test_several_draws_show_mean_counts():
    """With k draws the counts under each accuracy are means too: 50.0 over 2/4, not draw 0's 0/4."""
    from seedr1.data.schema import Sample
    from seedr1.evaluate.scoring import score_draws

    samples = [Sample(sample_id=f"s{i}", kind="validation", question="q", answer="a", options=list("abcd"),
                      gold_letter="A", task_level="L1", domain="Work") for i in range(4)]
    rows = [{"sample_id": s.sample_id, "k": k, "response": f"<answer>{'BA'[k]}</answer>"} for s in samples
            for k in (0, 1)]
    summary = score_draws(samples, rows, 2)
    assert _summary_cells(summary)[0] == "50.0<br><small>2/4</small>"
    html_text = render_html_report(summary, [])
    assert "2 of 4 correct" in html_text and "Means over 2 draws" in html_text

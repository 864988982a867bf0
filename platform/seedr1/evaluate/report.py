"""A self-contained, browsable HTML report of one evaluation: summary table on top, one card per sample below.

The file needs no server and loads nothing from outside: thumbnails are base64 JPEG data URIs, CSS and JS are inline.
All text (questions, options, model responses) is HTML-escaped. The output is a pure function of the inputs.
"""
from __future__ import annotations

import base64
import html
import io
import re
from pathlib import Path
from typing import Optional

import numpy as np
from PIL import Image

PAPER_LEVELS = ("L1", "L2", "L3")
PAPER_DOMAINS = ("Daily life", "Hobbies", "Recreation", "Work")
MAX_FRAMES = 8
THUMB_PX = 128

_THINK_RE = re.compile(r"<think>(.*?)</think>", re.DOTALL)
_ANSWER_RE = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)

_CSS = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222;background:#fafafa}
h1{font-size:1.4em}
table{border-collapse:collapse;margin:.5em 0 1em}
th,td{border:1px solid #bbb;padding:.3em .6em;text-align:center}
th{background:#eee}
td small{color:#666}
.caption{color:#666;font-size:.85em}
#filters{position:sticky;top:0;background:#fafafa;padding:.5em 0;border-bottom:1px solid #ccc;z-index:1}
#filters label{margin-right:1em}
#count{font-weight:bold}
.card{background:#fff;border:1px solid #ccc;border-radius:6px;margin:1em 0;padding:.8em}
.card.right{border-left:6px solid #2a2}
.card.wrong{border-left:6px solid #c22}
.head{display:flex;gap:.8em;align-items:center;flex-wrap:wrap}
.badge{padding:.1em .5em;border-radius:4px;color:#fff;font-size:.85em}
.badge.right{background:#2a2}.badge.wrong{background:#c22}
.badge.consistent{background:#27a}.badge.inconsistent{background:#d80}.badge.unjudged{background:#888}
.strip{display:flex;gap:4px;overflow-x:auto;align-items:flex-end;margin:.5em 0}
.strip figure{margin:0;text-align:center;font-size:.75em;color:#666}
.strip .obs img{outline:3px solid #27a}
.opts{list-style:none;padding-left:1em}
.opts li{margin:.15em 0}
.opts li.gold{background:#e6f6e6}
.opts li.chosen.wrongpick{background:#fbe6e6}
.tag{font-size:.75em;border:1px solid #888;border-radius:3px;padding:0 .3em;margin-left:.4em}
pre{white-space:pre-wrap;word-wrap:break-word;background:#f4f4f4;padding:.5em;margin:.3em 0}
"""

_JS = """
(function(){
  var cards = Array.prototype.slice.call(document.querySelectorAll('.card'));
  var level = document.getElementById('f-level'), domain = document.getElementById('f-domain');
  var result = document.getElementById('f-result'), incons = document.getElementById('f-inconsistent');
  var count = document.getElementById('count');
  function apply(){
    var shown = 0;
    cards.forEach(function(c){
      var ok = (level.value === '' || c.dataset.level === level.value)
        && (domain.value === '' || c.dataset.domain === domain.value)
        && (result.value === '' || c.dataset.correct === result.value)
        && (!incons.checked || c.dataset.consistent === 'false');
      c.style.display = ok ? '' : 'none';
      if (ok) shown++;
    });
    count.textContent = 'Showing ' + shown + ' of ' + cards.length;
  }
  [level, domain, result, incons].forEach(function(el){ el.addEventListener('change', apply); });
  apply();
})();
"""


def _e(value) -> str:
    """HTML-escaped text of any value (None -> empty)."""
    return html.escape("" if value is None else str(value), quote=True)


def image_data_uri(array, max_px: int = THUMB_PX) -> str:
    """A JPEG data URI of an image array ([H,W,3] or [H,W]), shrunk to fit max_px x max_px."""
    arr = np.asarray(array)
    if arr.dtype != np.uint8:
        arr = np.clip(arr, 0, 255).astype(np.uint8)
    img = Image.fromarray(arr).convert("RGB")
    img.thumbnail((max_px, max_px))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _frame_indices(total: int, cap: int = MAX_FRAMES) -> list[int]:
    """At most `cap` evenly spaced frame indices out of `total`, first and last included."""
    if total <= cap:
        return list(range(total))
    return sorted({int(round(i)) for i in np.linspace(0, total - 1, cap)})


def _cell(stats: Optional[dict]) -> str:
    """A table cell: accuracy in percent with correct/n below (correct: a mean over draws may be fractional); a dash
    when there are no numbers."""
    if not isinstance(stats, dict) or stats.get("accuracy") is None:
        return "<td>&ndash;</td>"
    extra = f"<br><small>{_count(stats.get('correct'))}/{_e(stats.get('n', '?'))}</small>" if "n" in stats else ""
    return f"<td>{100 * float(stats['accuracy']):.1f}{extra}</td>"


def _count(value) -> str:
    """A count; a mean count over draws (a float) to one decimal unless it is whole."""
    if isinstance(value, float):
        return f"{value:.0f}" if value.is_integer() else f"{value:.1f}"
    return _e("?" if value is None else value)


def _fmt(value, spec: str) -> str:
    """`value` formatted with `spec`, or a dash when it is missing or not a number."""
    try:
        return format(float(value), spec)
    except (TypeError, ValueError):
        return "&ndash;"


def _summary_html(summary: dict) -> str:
    """The paper-style accuracy table, overall counts and the reasoning figures."""
    by_level = summary.get("by_level") or {}
    l3_by_domain = summary.get("l3_by_domain") or {}  # the L3 columns: L3 questions only, as in the paper
    extra_levels = [lv for lv in by_level if lv not in PAPER_LEVELS]
    domains = list(PAPER_DOMAINS) + sorted(d for d in l3_by_domain if d not in PAPER_DOMAINS)
    overall = {k: summary[k] for k in ("accuracy", "n", "correct") if k in summary}
    head1 = ("<tr><th rowspan=2>L1</th><th rowspan=2>L2</th>"
             f"<th colspan={len(domains) + 1}>L3</th>"
             + "".join(f"<th rowspan=2>{_e(lv)}</th>" for lv in extra_levels)
             + "<th rowspan=2>Overall</th></tr>")
    head2 = "<tr>" + "".join(f"<th>{_e(d)}</th>" for d in domains) + "<th>L3 overall</th></tr>"
    row = ("<tr>" + _cell(by_level.get("L1")) + _cell(by_level.get("L2"))
           + "".join(_cell(l3_by_domain.get(d)) for d in domains) + _cell(by_level.get("L3"))
           + "".join(_cell(by_level.get(lv)) for lv in extra_levels) + _cell(overall) + "</tr>")
    reasoning = summary.get("reasoning") or {}
    missing = summary.get("missing") or []
    draws = summary.get("samples") if isinstance(summary.get("samples"), int) and summary["samples"] > 1 else None
    return (
        f"<p>Model: <b>{_e(summary.get('model', 'unknown'))}</b> &middot; "
        f"{_count(summary.get('correct'))} of {_e(summary.get('n', '?'))} correct &middot; "
        f"missing predictions: {len(missing)} &middot; errors: {_e(summary.get('errors', 0))} &middot; "
        f"rejected media: {len(summary.get('rejected') or [])}</p>"
        f"<table id=summary>{head1}{head2}{row}</table>"
        "<p class=caption>Accuracy in percent (correct/n). The L3 domain columns are L3 questions only."
        + (f" Means over {draws} draws per question (correct too)." if draws else "") + "</p>"
        "<table id=reasoning><tr><th>Format rate</th><th>Mean reasoning chars</th><th>Think/answer consistency</th>"
        f"</tr><tr><td>{_fmt(reasoning.get('format_rate'), '.3f')}</td>"
        f"<td>{_fmt(reasoning.get('mean_reasoning_chars'), '.1f')}</td>"
        f"<td>{_fmt(reasoning.get('consistency_rate'), '.3f')}</td></tr></table>"
    )


def _strip_html(item: dict) -> str:
    """The frames strip (at most MAX_FRAMES thumbnails) plus the current-observation image."""
    figures = []
    frames = item.get("frames")
    if frames is not None and len(frames):
        for i in _frame_indices(len(frames)):
            figures.append(f"<figure><img alt='frame {i}' src='{image_data_uri(frames[i])}'>"
                           f"<figcaption>frame {i}</figcaption></figure>")
    if item.get("image") is not None:
        figures.append(f"<figure class=obs><img alt='current observation' src='{image_data_uri(item['image'])}'>"
                       "<figcaption>current observation</figcaption></figure>")
    return f"<div class=strip>{''.join(figures)}</div>" if figures else ""


def _options_html(item: dict) -> str:
    """The options A.. with the gold one and the chosen one marked."""
    gold, chosen = item.get("gold_letter"), item.get("answer_letter")
    rows = []
    for i, text in enumerate(item.get("options") or []):
        letter = chr(ord("A") + i)
        classes = ["opt"] + (["gold"] if letter == gold else []) + (["chosen"] if letter == chosen else [])
        if letter == chosen and letter != gold:
            classes.append("wrongpick")
        tags = ("<span class=tag>gold</span>" if letter == gold else "") + \
               ("<span class=tag>chosen</span>" if letter == chosen else "")
        rows.append(f"<li class='{' '.join(classes)}' data-letter={letter}><b>{letter}.</b> {_e(text)}{tags}</li>")
    return f"<ul class=opts>{''.join(rows)}</ul>"


def _card_html(item: dict) -> str:
    """One sample's card, with data attributes for the filters."""
    correct = bool(item.get("correct"))
    consistent = item.get("consistent")
    cons_attr = "" if consistent is None else ("true" if consistent else "false")
    cons_badge = {"": ("unjudged", "consistency n/a"), "true": ("consistent", "consistent"),
                  "false": ("inconsistent", "inconsistent")}[cons_attr]
    response = item.get("response") or ""
    think = _THINK_RE.search(response)
    answer = _ANSWER_RE.search(response)
    verdict = "right" if correct else "wrong"
    return (
        f"<div class='card {verdict}' data-sample-id='{_e(item.get('sample_id'))}' "
        f"data-level='{_e(item.get('task_level'))}' data-domain='{_e(item.get('domain'))}' "
        f"data-correct='{'true' if correct else 'false'}' data-consistent='{cons_attr}'>"
        f"<div class=head><b class=sid>{_e(item.get('sample_id'))}</b>"
        f"<span>{_e(item.get('task_level') or 'no level')}</span><span>{_e(item.get('domain') or 'no domain')}</span>"
        f"<span class='badge {verdict}'>{'&#10003; right' if correct else '&#10007; wrong'}</span>"
        f"<span class='badge {cons_badge[0]}'>{cons_badge[1]}</span></div>"
        + _strip_html(item)
        + f"<p class=question>{_e(item.get('question'))}</p>"
        + _options_html(item)
        + "<div class=reasoning><b>Reasoning</b>"
        + (f"<pre>{_e(think.group(1).strip())}</pre>" if think else "<pre><i>(no &lt;think&gt; block)</i></pre>")
        + "</div><div class=answer><b>Answer</b> "
        + (f"<code>{_e(answer.group(1).strip())}</code>" if answer else "<i>(no &lt;answer&gt; block)</i>")
        + f" &rarr; letter <b>{_e(item.get('answer_letter') or 'none')}</b>"
        + f" (gold <b>{_e(item.get('gold_letter'))}</b>)</div>"
        + f"<details><summary>Raw response</summary><pre class=raw>{_e(response)}</pre></details></div>"
    )


def _select(id_: str, label: str, choices: list[tuple[str, str]]) -> str:
    """A labelled <select> of (value, text) choices."""
    opts = "".join(f"<option value='{_e(v)}'>{_e(t)}</option>" for v, t in choices)
    return f"<label>{_e(label)} <select id={id_}>{opts}</select></label>"


def _filters_html(items: list[dict]) -> str:
    """The filter bar: level, domain, right/wrong, inconsistent only, and the 'Showing N of M' count."""
    present = {str(it["task_level"]) for it in items if it.get("task_level")}
    levels = list(PAPER_LEVELS) + sorted(present - set(PAPER_LEVELS))
    domains = sorted({str(it["domain"]) for it in items if it.get("domain")})
    return (
        "<div id=filters>"
        + _select("f-level", "Level", [("", "All")] + [(lv, lv) for lv in levels])
        + _select("f-domain", "Domain", [("", "All")] + [(d, d) for d in domains])
        + _select("f-result", "Result", [("", "All"), ("true", "Right only"), ("false", "Wrong only")])
        + "<label><input type=checkbox id=f-inconsistent> Inconsistent only</label>"
        + f"<span id=count>Showing {len(items)} of {len(items)}</span></div>"
    )


def render_html_report(summary: dict, items: list[dict], title: str = "SEED-Bench-R1 evaluation report") -> str:
    """The report as one HTML string (see `write_html_report`)."""
    return (
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8>"
        f"<meta name=viewport content='width=device-width, initial-scale=1'><title>{_e(title)}</title>"
        f"<style>{_CSS}</style></head><body><h1>{_e(title)}</h1>"
        + _summary_html(summary or {})
        + _filters_html(items)
        + "<div id=cards>" + "".join(_card_html(it) for it in items) + "</div>"
        + f"<script>{_JS}</script></body></html>\n"
    )


def write_html_report(path, summary: dict, items: list[dict],
                      title: str = "SEED-Bench-R1 evaluation report") -> Path:
    """Write the self-contained HTML report of one evaluation to `path` and return it."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_html_report(summary, items, title), encoding="utf-8")
    return out

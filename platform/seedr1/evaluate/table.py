"""The paper's results layout (rows: models; columns: L1, L2, L3 per domain and overall) as markdown and a PNG."""
from __future__ import annotations

from pathlib import Path

DOMAINS = ("Daily life", "Hobbies", "Recreation", "Work")
COLUMNS = ("L1", "L2", *(f"L3 {d}" for d in DOMAINS), "L3", "Overall")


def columns_of(summary: dict) -> dict[str, float | None]:
    """Accuracy per paper column from an evaluation summary (None where the level/domain was not evaluated)."""
    level = summary.get("by_level", {})
    l3_domain = summary.get("l3_by_domain", {})
    out = {"L1": level.get("L1", {}).get("accuracy"), "L2": level.get("L2", {}).get("accuracy")}
    out.update({f"L3 {d}": l3_domain.get(d, {}).get("accuracy") for d in DOMAINS})
    out["L3"] = level.get("L3", {}).get("accuracy")
    out["Overall"] = summary.get("accuracy")
    return out


def markdown_table(rows: dict[str, dict], spread: dict[str, dict] | None = None) -> str:
    """``rows``: model name -> summary; ``spread`` (optional): model name -> column -> std, shown as mean +- std."""
    head = "| Model | " + " | ".join(COLUMNS) + " |\n|---|" + "---:|" * len(COLUMNS) + "\n"
    lines = []
    for name, summary in rows.items():
        cols = columns_of(summary)
        cells = []
        for c in COLUMNS:
            v = cols[c]
            s = (spread or {}).get(name, {}).get(c)
            cells.append("-" if v is None else f"{100 * v:.1f}" + (f" ± {100 * s:.1f}" if s is not None else ""))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return head + "\n".join(lines) + "\n"


def bar_chart(rows: dict[str, dict], path: str | Path, title: str = "SEED-Bench-R1 accuracy (%)") -> Path:
    """Grouped bars (one colour per model, one group per column) drawn with Pillow; returns the PNG path."""
    from PIL import Image, ImageDraw

    palette = [(120, 120, 120), (66, 133, 244), (219, 68, 55), (15, 157, 88), (244, 180, 0), (171, 71, 188)]
    names = list(rows)
    width, height, left, bottom, top = 160 + 110 * len(COLUMNS), 420, 60, 70, 50
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    draw.text((left, 15), title, fill="black")
    plot_h = height - bottom - top
    for tick in range(0, 101, 20):
        y = top + plot_h * (1 - tick / 100)
        draw.line([(left, y), (width - 20, y)], fill=(225, 225, 225))
        draw.text((left - 30, y - 6), str(tick), fill="black")
    group_w = (width - left - 20) / len(COLUMNS)
    bar_w = max(4, (group_w - 16) / max(len(names), 1))
    for g, column in enumerate(COLUMNS):
        x0 = left + g * group_w + 8
        for m, name in enumerate(names):
            v = columns_of(rows[name])[column]
            if v is None:
                continue
            x = x0 + m * bar_w
            draw.rectangle([x, top + plot_h * (1 - v), x + bar_w - 2, top + plot_h], fill=palette[m % len(palette)])
        draw.text((x0, height - bottom + 8), column.replace("L3 ", "L3\n"), fill="black")
    for m, name in enumerate(names):
        y = height - 22
        x = left + m * 150
        draw.rectangle([x, y, x + 12, y + 12], fill=palette[m % len(palette)])
        draw.text((x + 18, y), name[:20], fill="black")
    img.save(path)
    return Path(path)

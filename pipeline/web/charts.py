"""Inline SVG charts (no script, no external library): the Decision 766 rates as horizontal bars."""

from __future__ import annotations

from html import escape

from pipeline.domain.stats import ProvinceStats, indicator_book


def stats_chart(stats: ProvinceStats, lang: str = "vi") -> str:
    """An SVG bar chart (percentages) of the period's indicators that have a bar (pipeline/data/indicators.yaml),
    labelled in ``lang``; "—" where a rate has no denominator."""
    book = indicator_book()
    bars = [(label, ind.rate) for ind in book.indicators if (label := ind.bar(lang)) is not None]
    row_h, label_w, bar_w, pad = 30, 190, 420, 8
    height = row_h * len(bars) + 2 * pad
    parts = [f'<svg class="chart" role="img" viewBox="0 0 {label_w + bar_w + 80} {height}" '
             f'xmlns="http://www.w3.org/2000/svg"><title>{escape(book.chart_title(lang))}</title>']
    for i, (label, name) in enumerate(bars):
        rate = getattr(stats, name)
        y = pad + i * row_h
        parts.append(f'<text x="0" y="{y + 19}">{escape(label)}</text>')
        parts.append(f'<rect x="{label_w}" y="{y + 5}" width="{bar_w}" height="18" fill="#eef1f4"/>')
        if rate is not None:
            colour = "#b3261e" if name == "late_rate" else "#1e7b34" if name in ("early_rate", "on_time_rate") \
                else "#a1141b"
            parts.append(f'<rect x="{label_w}" y="{y + 5}" width="{rate * bar_w:.1f}" height="18" fill="{colour}"/>')
        text = "—" if rate is None else f"{rate * 100:.1f} %"
        parts.append(f'<text x="{label_w + bar_w + 8}" y="{y + 19}">{text}</text>')
    parts.append("</svg>")
    return "".join(parts)

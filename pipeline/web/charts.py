"""Inline SVG charts (no script, no external library): the Decision 766 rates as horizontal bars."""

from __future__ import annotations

from html import escape

from pipeline.domain.stats import ProvinceStats

BARS = [
    ("Số hóa hồ sơ", "Digitised", "digitisation_rate"),
    ("Kết quả điện tử", "E-results", "e_result_rate"),
    ("Tái sử dụng dữ liệu", "Reused data", "reuse_rate"),
    ("Trước hạn", "Early", "early_rate"),
    ("Đúng hạn", "On time", "on_time_rate"),
    ("Trễ hạn", "Late", "late_rate"),
]


def stats_chart(stats: ProvinceStats, lang: str = "vi") -> str:
    """An SVG bar chart (percentages) of the period's indicators; "—" where a rate has no denominator."""
    row_h, label_w, bar_w, pad = 30, 190, 420, 8
    height = row_h * len(BARS) + 2 * pad
    parts = [f'<svg class="chart" role="img" viewBox="0 0 {label_w + bar_w + 80} {height}" '
             f'xmlns="http://www.w3.org/2000/svg"><title>Chỉ số Quyết định 766</title>']
    for i, (vi, en, name) in enumerate(BARS):
        rate = getattr(stats, name)
        y = pad + i * row_h
        label = vi if lang == "vi" else en
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

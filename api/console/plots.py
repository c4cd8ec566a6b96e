"""Charts for the dashboard as inline SVG, drawn by hand: two lines over days, fast enough for every page
view (matplotlib took about 300 ms a chart here)."""

from __future__ import annotations

from html import escape
from typing import Any

WIDTH, HEIGHT = 640, 220
LEFT, RIGHT, TOP, BOTTOM = 84, 24, 12, 36
SERIES = (("per_1k", "cascade", "#3b5bdb", ""), ("baseline_per_1k", "all to the last tier", "#c2410c", "6 4"))


def cost_chart(points: list[dict[str, Any]]) -> str:
    """Cost per 1,000 documents by day against sending everything to the last tier; an <svg> element."""
    shown = [p for p in points if p["per_1k"] is not None]
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" role="img" '
        'aria-label="cost per 1,000 documents by day" font-family="system-ui, sans-serif" font-size="11">'
    ]
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    parts.append(f'<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#ccd"/>')
    if not shown:
        parts.append(
            f'<text x="{LEFT + plot_w / 2}" y="{TOP + plot_h / 2}" text-anchor="middle">no spend recorded yet</text>'
        )
        return "".join(parts) + "</svg>"
    top = max(max(p["per_1k"], p["baseline_per_1k"] or 0) for p in shown) or 1.0

    def xy(index: int, value: float) -> tuple[float, float]:
        x = LEFT + (plot_w * index / max(len(shown) - 1, 1))
        return x, TOP + plot_h * (1 - value / top)

    for fraction in (0.0, 0.5, 1.0):
        y = TOP + plot_h * (1 - fraction)
        parts.append(f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">${top * fraction:.3f}</text>')
    ends = {0: "start", len(shown) - 1: "end"}
    for index in sorted({0, len(shown) // 2, len(shown) - 1}):
        x, _ = xy(index, 0)
        label = escape(str(shown[index]["day"]))
        anchor = ends.get(index, "middle")
        parts.append(f'<text x="{x:.1f}" y="{HEIGHT - BOTTOM + 16}" text-anchor="{anchor}">{label}</text>')
    for key, _name, colour, dash in SERIES:
        line = " ".join(f"{x:.1f},{y:.1f}" for x, y in (xy(i, p[key] or 0.0) for i, p in enumerate(shown)))
        dashes = f' stroke-dasharray="{dash}"' if dash else ""
        parts.append(f'<polyline points="{line}" fill="none" stroke="{colour}" stroke-width="2"{dashes}/>')
    for row, (_, name, colour, dash) in enumerate(SERIES):
        y = TOP + 14 + row * 14
        dashes = f' stroke-dasharray="{dash}"' if dash else ""
        parts.append(
            f'<line x1="{LEFT + 8}" x2="{LEFT + 28}" y1="{y - 4}" y2="{y - 4}" stroke="{colour}" stroke-width="2"{dashes}/>'
        )
        parts.append(f'<text x="{LEFT + 34}" y="{y}">{escape(name)}</text>')
    parts.append(
        f'<text x="14" y="{TOP + plot_h / 2}" transform="rotate(-90 14 {TOP + plot_h / 2})" text-anchor="middle">USD per 1,000 documents</text>'
    )
    return "".join(parts) + "</svg>"

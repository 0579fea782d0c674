"""A minimal SVG writer for the report's many small charts (no matplotlib, milliseconds each).

A report of a large grid has hundreds of per-block figures; drawing them with matplotlib
costs about 0.1–2 s each, this writer about a millisecond. Every string is stripped of
control characters and XML-escaped; every shape may carry a ``<title>`` tooltip, so a
reader hovering a point sees its value. Coordinates are in px with y pointing down.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

import numpy as np

from cmrbench.reports.text import strip_controls

FONT = "system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif"
GRID_GREY, AXIS_GREY, TEXT_GREY = "#e5e7eb", "#9ca3af", "#374151"


def _text(value: object) -> str:
    return escape(strip_controls(value))


def _attrs(**attributes: object) -> str:
    return "".join(
        f" {name.rstrip('_').replace('_', '-')}={quoteattr(strip_controls(value))}"
        for name, value in attributes.items()
        if value is not None
    )


def _tooltip(title: str | None) -> str:
    return f"<title>{_text(title)}</title>" if title else ""


def _n(value: float) -> str:
    """A coordinate with at most one decimal (keeps files small)."""
    return f"{value:.1f}".rstrip("0").rstrip(".")


class Svg:
    """An SVG document built shape by shape; `save` writes it."""

    def __init__(self, width: float, height: float, title: str) -> None:
        self.width, self.height = width, height
        self.parts = [
            f"<title>{_text(title)}</title>",
            f'<rect width="{_n(width)}" height="{_n(height)}" fill="#fff"/>',
        ]

    def rect(
        self,
        x: float,
        y: float,
        width: float,
        height: float,
        fill: str,
        stroke: str | None = None,
        title: str | None = None,
    ) -> None:
        attributes = _attrs(
            x=_n(x), y=_n(y), width=_n(width), height=_n(height), fill=fill, stroke=stroke
        )
        self.parts.append(f"<rect{attributes}>{_tooltip(title)}</rect>")

    def circle(
        self,
        cx: float,
        cy: float,
        r: float,
        fill: str,
        stroke: str | None = None,
        title: str | None = None,
    ) -> None:
        attributes = _attrs(cx=_n(cx), cy=_n(cy), r=f"{r:.2f}", fill=fill, stroke=stroke)
        self.parts.append(f"<circle{attributes}>{_tooltip(title)}</circle>")

    def line(
        self,
        x1: float,
        y1: float,
        x2: float,
        y2: float,
        stroke: str,
        width: float = 1.0,
        dash: str | None = None,
        title: str | None = None,
    ) -> None:
        attributes = _attrs(
            x1=_n(x1),
            y1=_n(y1),
            x2=_n(x2),
            y2=_n(y2),
            stroke=stroke,
            stroke_width=width,
            stroke_dasharray=dash,
        )
        self.parts.append(f"<line{attributes}>{_tooltip(title)}</line>")

    def dots(
        self, xs: np.ndarray, ys: np.ndarray, radius: float, colour: str, opacity: float = 0.55
    ) -> None:
        """Many points as one path of round-capped zero-length strokes (compact and fast)."""
        keep = np.isfinite(xs) & np.isfinite(ys)
        if not keep.any():
            return
        path = "".join(f"M{_n(x)} {_n(y)}h0" for x, y in zip(xs[keep], ys[keep]))
        attributes = _attrs(
            d=path,
            stroke=colour,
            stroke_width=f"{2 * radius:.1f}",
            stroke_linecap="round",
            stroke_opacity=opacity,
        )
        self.parts.append(f"<path{attributes}/>")

    def text(
        self,
        x: float,
        y: float,
        value: object,
        size: float = 11,
        anchor: str = "start",
        colour: str = TEXT_GREY,
        bold: bool = False,
        rotate: bool = False,
    ) -> None:
        transform = f"rotate(-90 {_n(x)} {_n(y)})" if rotate else None
        attributes = _attrs(
            x=_n(x),
            y=_n(y),
            font_size=size,
            text_anchor=anchor,
            fill=colour,
            font_weight="bold" if bold else None,
            transform=transform,
        )
        self.parts.append(f"<text{attributes}>{_text(value)}</text>")

    def render(self) -> str:
        head = (
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{_n(self.width)}" '
            f'height="{_n(self.height)}" viewBox="0 0 {_n(self.width)} {_n(self.height)}" '
            f'font-family="{FONT}">'
        )
        return head + "".join(self.parts) + "</svg>\n"

    def save(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.render(), encoding="utf-8")
        return path


@dataclass(frozen=True)
class Scale:
    """A linear (or log10) map from data ``[low, high]`` to pixels ``[start, end]``."""

    low: float
    high: float
    start: float
    end: float
    log: bool = False

    def __call__(self, value: np.ndarray | float) -> np.ndarray:
        value = np.asarray(value, dtype=float)
        low, high = (
            (math.log10(self.low), math.log10(self.high)) if self.log else (self.low, self.high)
        )
        data = np.log10(value) if self.log else value
        span = (high - low) or 1.0
        return self.start + (data - low) / span * (self.end - self.start)


def padded_range(
    values: np.ndarray, include: tuple[float, ...] = (), pad: float = 0.06
) -> tuple[float, float]:
    """``[min, max]`` of the finite ``values`` (and ``include``), widened by ``pad`` each side."""
    finite = np.asarray(values, dtype=float)
    finite = np.concatenate([finite[np.isfinite(finite)], np.asarray(include, dtype=float)])
    if finite.size == 0:
        return 0.0, 1.0
    low, high = float(finite.min()), float(finite.max())
    margin = (high - low) * pad or (abs(high) * pad or 1.0)
    return low - margin, high + margin


def nice_ticks(low: float, high: float, count: int = 4) -> np.ndarray:
    """About ``count`` round tick values (steps of 1, 2 or 5 × 10^k) inside ``[low, high]``."""
    span = high - low
    if not np.isfinite(span) or span <= 0:
        return np.array([low])
    raw = span / count
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.ceil(low / step) * step
    return np.arange(first, high + step * 1e-9, step)


def tick_label(value: float) -> str:
    """A tick value with no trailing zeros (``0.85``, ``-10``, ``0``)."""
    text = f"{value:.4g}"
    return "0" if text in ("-0", "0") else text


def axes_frame(
    svg: Svg,
    x: Scale,
    y: Scale,
    x_ticks: np.ndarray | None,
    y_ticks: np.ndarray,
    x_labels: list[str] | None = None,
    size: float = 9,
) -> None:
    """Grid lines and tick labels of one panel (y ticks on the left, x ticks below)."""
    top, bottom = min(y.start, y.end), max(y.start, y.end)
    left, right = min(x.start, x.end), max(x.start, x.end)
    for value in y_ticks:
        pixel = float(y(value))
        svg.line(left, pixel, right, pixel, GRID_GREY)
        svg.text(left - 4, pixel + 3, tick_label(value), size=size, anchor="end")
    if x_ticks is not None:
        labels = x_labels or [tick_label(v) for v in x_ticks]
        for value, label in zip(x_ticks, labels):
            pixel = float(x(value))
            svg.line(pixel, top, pixel, bottom, GRID_GREY)
            svg.text(pixel, bottom + 12, label, size=size, anchor="middle")
    svg.line(left, bottom, right, bottom, AXIS_GREY)
    svg.line(left, top, left, bottom, AXIS_GREY)

"""Bland–Altman small multiples for the clinical page, as SVG (`cmrbench.reports.svg`).

One panel per method × clinical quantity at one budget: each test subject and seed's mean of
reference and prediction against their difference, with the method's bias and limits of
agreement from `cmrbench.reports.stats.clinical` (repeated measures: seeds within subject).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from cmrbench.reports.charts import LABEL_WIDTH, TITLE_HEIGHT, titled
from cmrbench.reports.svg import AXIS_GREY, Scale, axes_frame, nice_ticks, padded_range


def bland_altman_grid(
    points: pd.DataFrame, agreement: pd.DataFrame, colours: dict[str, str], path: Path, title: str
) -> Path:
    """Bland–Altman small multiples: one row per method, one column per clinical quantity;
    each panel shows difference (prediction − reference) against their mean for every test
    subject and seed, the bias (solid) and the limits of agreement (dotted). Panels of one
    quantity share their axes, so methods compare at a glance.

    ``points``: ``method, quantity, unit, pred, ref``; ``agreement``: ``method, quantity,
    bias, loa_low, loa_high`` (`stats.clinical_agreement`); methods and quantities are drawn
    in the order they first appear in ``points``.
    """
    methods = list(dict.fromkeys(points["method"]))
    quantities = list(dict.fromkeys(points["quantity"]))
    panel_w, panel_h, gap = 150.0, 96.0, 34.0
    width = LABEL_WIDTH + (panel_w + gap) * len(quantities)
    height = TITLE_HEIGHT + 22 + (panel_h + 18) * len(methods) + 24
    svg = titled(width, height, title)
    mean = (points["pred"].to_numpy(float) + points["ref"].to_numpy(float)) / 2
    difference = points["pred"].to_numpy(float) - points["ref"].to_numpy(float)
    columns = ["method", "quantity", "bias", "loa_low", "loa_high"]
    limits = {
        (m, q): (bias, low, high)
        for m, q, bias, low, high in agreement[columns].itertuples(index=False, name=None)
    }
    for j, quantity in enumerate(quantities):
        in_quantity = (points["quantity"] == quantity).to_numpy()
        bounds = [
            bound for m in methods if (m, quantity) in limits for bound in limits[(m, quantity)][1:]
        ]
        x_low, x_high = padded_range(mean[in_quantity])
        y_low, y_high = padded_range(difference[in_quantity], include=(0.0, *bounds))
        left = LABEL_WIDTH + j * (panel_w + gap)
        unit = points.loc[in_quantity, "unit"].iloc[0]
        svg.text(
            left + panel_w / 2,
            TITLE_HEIGHT + 12,
            f"{quantity} ({unit})",
            size=10,
            anchor="middle",
            bold=True,
        )
        for i, method in enumerate(methods):
            top = TITLE_HEIGHT + 22 + i * (panel_h + 18)
            x = Scale(x_low, x_high, left, left + panel_w)
            y = Scale(y_low, y_high, top + panel_h, top)
            axes_frame(
                svg,
                x,
                y,
                nice_ticks(x_low, x_high, 3) if i == len(methods) - 1 else None,
                nice_ticks(y_low, y_high, 3),
                size=8,
            )
            svg.line(left, float(y(0.0)), left + panel_w, float(y(0.0)), AXIS_GREY)
            mine = in_quantity & (points["method"] == method).to_numpy()
            svg.dots(x(mean[mine]), y(difference[mine]), 1.4, colours[method])
            if (method, quantity) in limits:
                bias, loa_low, loa_high = limits[(method, quantity)]
                limits_text = f"limits of agreement {loa_low:.2f} to {loa_high:.2f}"
                levels = [(bias, 1.5, None, f"bias {bias:.2f}")] + [
                    (bound, 1.0, "3 3", limits_text)
                    for bound in (loa_low, loa_high)
                    if np.isfinite(bound)
                ]
                for value, stroke, dash, text in levels:
                    level = float(y(value))
                    svg.line(
                        left,
                        level,
                        left + panel_w,
                        level,
                        colours[method],
                        stroke,
                        dash=dash,
                        title=f"{method} {quantity}: {text}",
                    )
            if j == 0:
                svg.text(LABEL_WIDTH - 34, top + panel_h / 2 + 4, method, size=9, anchor="end")
    svg.text(
        width / 2,
        height - 6,
        "mean of prediction and reference (x) · prediction − reference (y)",
        size=9,
        anchor="middle",
    )
    return svg.save(path)

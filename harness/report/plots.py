"""Per-case timeline figures as inline PNG (base64), drawn with matplotlib's Agg backend.

One figure per case: the ingress latency on top; below, the true component's key metrics (each scaled to its
own pre-injection median and spread, so several units share an axis); the injected window shaded.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Callable, Sequence
from typing import Any

MAX_METRICS = 4


def _robust_scale(values, before_mask):
    import numpy as np

    ref = values[before_mask] if before_mask.any() else values
    med = float(np.nanmedian(ref))
    spread = float(np.nanmedian(np.abs(ref - med))) * 1.4826 or float(np.nanstd(ref)) or 1.0
    return (values - med) / spread


def _render(draw: Callable[[Any], None], **subplots: Any) -> str:
    """A PNG data: URI of the figure ``plt.subplots(**subplots)`` drawn by ``draw(axes)``; always closed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(**subplots)
    try:
        draw(axes)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
    finally:
        plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def timeline_png(df, inject: float, end: float | None, sli: str | None, metrics: Sequence[str],
                 title: str) -> str:
    """A data: URI of the case's timeline figure."""
    t = df["time"].to_numpy(dtype=float)
    x = t - inject

    def draw(axes) -> None:
        top, bottom = axes
        if sli and sli in df:
            top.plot(x, df[sli].to_numpy(dtype=float), lw=1, color="#1f77b4")
            top.set_ylabel(sli.partition("_")[2] or sli, fontsize=8)
        else:
            top.text(0.5, 0.5, "no ingress latency column", ha="center", va="center", transform=top.transAxes)
        before = x < 0
        for col in list(metrics)[:MAX_METRICS]:
            bottom.plot(x, _robust_scale(df[col].to_numpy(dtype=float), before), lw=1, label=col)
        if metrics:
            bottom.legend(fontsize=6, loc="upper left", frameon=False)
        bottom.set_ylabel("robust z", fontsize=8)
        bottom.set_xlabel("seconds from injection", fontsize=8)
        for ax in axes:
            ax.axvspan(0, (end - inject) if end else x[-1], color="#d62728", alpha=0.12, lw=0)
            ax.axvline(0, color="#d62728", lw=0.8)
            ax.tick_params(labelsize=7)
        top.set_title(title, fontsize=9)

    return _render(draw, nrows=2, ncols=1, figsize=(7.5, 3.4), sharex=True, dpi=80)


def detectability_png(curves: dict[str, list[tuple[str, float | None, list[float] | None]]]) -> str:
    """A data: URI of AC@1 against fault intensity, one line per method (``curves``: method -> [(bin, AC@1,
    interval)]), intervals as error bars."""

    def draw(ax) -> None:
        for i, (method, points) in enumerate(curves.items()):
            pts = [(j, v, ci) for j, (_, v, ci) in enumerate(points) if v is not None]
            if not pts:
                continue
            x = [j + (i - len(curves) / 2) * 0.03 for j, _, _ in pts]  # a small offset keeps error bars apart
            y = [v for _, v, _ in pts]
            err = [[v - (ci or [v, v])[0] for _, v, ci in pts], [(ci or [v, v])[1] - v for _, v, ci in pts]]
            ax.errorbar(x, y, yerr=err, marker="o", ms=3, lw=1, capsize=2, label=method)
        labels = [b for b, _, _ in next(iter(curves.values()), [])]
        ax.set_xticks(range(len(labels)), labels, fontsize=7)
        ax.set_xlabel("fault intensity (drawn, 0 = barely visible, 1 = severe)", fontsize=8)
        ax.set_ylabel("AC@1", fontsize=8)
        ax.set_ylim(-0.05, 1.05)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=6, loc="best", frameon=False)

    return _render(draw, figsize=(7.5, 3.6), dpi=80)

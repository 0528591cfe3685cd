"""Per-class loss statistics over a training run: read from ``metrics.jsonl``, plotted to a PNG.

The training loop writes a ``{"kind": "loss_stats", "iter": ..., "pos_neg": [...], "beta": [...]}``
record every ``log_loss_stats_every`` iterations (``beta`` for EQL v2 and Grad-Libra v2 only) and,
at the end, :func:`plot_loss_statistics` draws one panel per statistic, one line per class, into
``loss_stats.png`` beside the checkpoint, so a loss that never switched on (``pos_neg`` flat at 1)
is seen at a glance.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

log = logging.getLogger(__name__)

STATISTICS = ("pos_neg", "beta")


def read_loss_statistics(metrics_path: str | Path) -> list[dict]:
    """The ``loss_stats`` records of a ``metrics.jsonl``, in order."""
    records = []
    for line in Path(metrics_path).read_text().splitlines():
        if line.strip():
            record = json.loads(line)
            if record.get("kind") == "loss_stats":
                records.append(record)
    return records


def plot_loss_statistics(metrics_path: str | Path, png_path: str | Path,
                         class_names: list[str] | None = None) -> Path | None:
    """Write the per-class statistics against iterations to ``png_path``; None when there is nothing
    to plot or matplotlib is not installed (the training run must not fail over a plot)."""
    records = read_loss_statistics(metrics_path)
    keys = [k for k in STATISTICS if any(k in r for r in records)]
    if not records or not keys:
        return None
    try:
        import matplotlib  # noqa: PLC0415 (only needed at the end of a run)

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415
    except ImportError:
        log.warning("matplotlib is not installed: no %s", png_path)
        return None
    fig, axes = plt.subplots(len(keys), 1, figsize=(8, 3.2 * len(keys)), squeeze=False, sharex=True)
    for ax, key in zip(axes[:, 0], keys):
        rows = [r for r in records if key in r]
        iters = [r["iter"] for r in rows]
        for j in range(len(rows[0][key])):
            label = class_names[j] if class_names and j < len(class_names) else f"class {j}"
            ax.plot(iters, [r[key][j] for r in rows], label=label)
        ax.set_ylabel(key)
        if key == "pos_neg" and max(max(r[key]) for r in rows) > 10:
            ax.set_yscale("symlog", linthresh=1e-3)
        ax.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("iteration")
    axes[0, 0].legend(fontsize=7, ncol=2, loc="best")
    fig.tight_layout()
    png_path = Path(png_path)
    fig.savefig(png_path, dpi=100)
    plt.close(fig)
    return png_path

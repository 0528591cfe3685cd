"""What the two long-tail loss benchmarks share (``benchmarks/longtail.py`` on composited detection data,
``benchmarks/longtail_cells.py`` on real CRIC cells): the recipe entries, which classes are rare, whether a
loss's per-class statistics left neutral, and per-seed statistics with paired bootstrap intervals."""

from __future__ import annotations

import statistics

import numpy as np

# a benchmark entry that is a recipe, not only a loss: config overrides (configs/efl_official.yaml explains them)
RECIPES: dict[str, dict] = {
    "efl_official": {
        "loss": {"name": "efl", "params": {"gamma": 2.0, "alpha": 0.25, "scale_factor": 8.0}},
        "model": {"prior_prob": 0.001},
        "repeat_factor_threshold": 0.1,
        # lr 0.02 per 16 images (linear scaling to the preset's batch size in run_overrides)
        "schedule": {"optimizer": "sgd", "lr": 0.02, "momentum": 0.9, "weight_decay": 0.0001,
                     "decay_bias_and_norm": True, "lr_schedule": "step", "lr_steps": [0.67, 0.89]},
    },
}
RARE_MAX_SHARE = 0.1  # rare: < 10% of the training boxes each (50-200 boxes of ~2,700 at the GPU preset)
NEUTRAL_TOLERANCE = 0.1  # a statistic "moved" when a rare class's beta / pos_neg fell below 1 - this
BOOTSTRAP_RESAMPLES = 10_000


def rare_classes(train_counts: dict[str, int]) -> list[str]:
    """The tail: classes holding some but less than 10% of the training boxes each.

    Example:
        >>> rare_classes({"ASC-US": 800, "LSIL": 700, "SCC": 55, "NILM": 0})
        ['SCC']
    """
    total = sum(train_counts.values())
    return [n for n, c in train_counts.items() if 0 < c < RARE_MAX_SHARE * total]


def statistics_moved(stats: dict[str, list[float]], class_names: list[str], rare: list[str]) -> tuple[bool | None, float | None]:
    """(moved, lowest rare-class value) of a loss's final ``beta`` (else ``pos_neg``); (None, None) for
    losses without statistics. Neutral is 1 (no down-weighting)."""
    values = stats.get("beta") or stats.get("pos_neg")
    if not values:
        return None, None
    low = min(values[class_names.index(n)] for n in rare) if rare else min(values)
    return low < 1 - NEUTRAL_TOLERANCE, low


def mean_std(values: list[float | None]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation of the values that are not None; (None, None) when none are."""
    vals = [v for v in values if v is not None]
    if not vals:
        return None, None
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0)


def paired_delta(records: list[dict], loss: str, baseline: str, key: str = "rare_map",
                 resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0) -> tuple[float, float, float] | None:
    """Mean over seeds of ``key(loss) - key(baseline)`` on the same seed, with a percentile bootstrap
    95% interval (seeds resampled with replacement); None with fewer than 2 paired seeds.

    Example:
        >>> rs = [{"loss": "a", "seed": s, "rare_map": 0.30 + 0.01 * s} for s in range(4)]
        >>> rs += [{"loss": "b", "seed": s, "rare_map": 0.20 + 0.01 * s} for s in range(4)]
        >>> [round(v, 3) for v in paired_delta(rs, "a", "b")]
        [0.1, 0.1, 0.1]
    """
    mine = {r["seed"]: r[key] for r in records if r["loss"] == loss and r.get(key) is not None}
    base = {r["seed"]: r[key] for r in records if r["loss"] == baseline and r.get(key) is not None}
    seeds = sorted(mine.keys() & base.keys())
    if len(seeds) < 2:
        return None
    deltas = np.array([mine[s] - base[s] for s in seeds])
    rng = np.random.default_rng(seed)
    means = deltas[rng.integers(len(deltas), size=(resamples, len(deltas)))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return float(deltas.mean()), float(low), float(high)


def fmt_delta(delta: tuple[float, float, float] | None) -> str:
    """``+0.012 [+0.003, +0.020]``, or ``n/a``."""
    return "n/a" if delta is None else f"{delta[0]:+.3f} [{delta[1]:+.3f}, {delta[2]:+.3f}]"

"""A paired bootstrap over validation images: a 95 % interval for every COCO metric difference, even from one run.

Both models' per-image matches are already computed (`COCOScores`); each resample draws the validation images with
replacement, the same draw for both models, and re-accumulates each model's AP over it. The percentile interval of the
differences says how much the difference depends on which images were drawn. It does not cover training noise:
one training run per model, so a second seed can still change the picture (`seeds=` does that).
"""

from __future__ import annotations

import math

import numpy as np

from .cocoeval import METRICS, COCOScores
from .stats import Interval


def resample_metrics(scores: dict[str, COCOScores], resamples: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Every model's `METRICS` over the same `resamples` image draws: {model: (resamples, len(METRICS)) array}, NaN
    where a draw holds no object of a size class."""
    n = {s.n_images for s in scores.values()}
    if len(n) != 1:
        raise ValueError(f"paired resamples need the same validation images for every model, got {sorted(n)} images")
    n_images = n.pop()
    draws = np.random.default_rng(seed).integers(0, n_images, size=(resamples, n_images))  # (B, N) image indices
    out = {}
    for name, s in scores.items():
        rows = [s.metrics(draw) for draw in draws]
        out[name] = np.array([[math.nan if r[k] is None else r[k] for k in METRICS] for r in rows], dtype=float)
    return out


def paired_bootstrap(
    scores: dict[str, COCOScores], reference: str, resamples: int = 1000, level: float = 0.95, seed: int = 0
) -> dict[str, dict[str, Interval]]:
    """For every model but `reference`: {metric: its difference from `reference` on all images, with the percentile
    interval of that difference over `resamples` paired image resamples}.

    Identical predictions give the interval [0, 0]; with 0 resamples the bounds are NaN.
    """
    draws = resample_metrics(scores, resamples, seed) if resamples else {}
    ref = scores[reference].metrics()
    tail = (1 - level) / 2 * 100
    out = {}
    for name, s in scores.items():
        if name == reference:
            continue
        full, intervals = s.metrics(), {}
        for j, k in enumerate(METRICS):
            if full[k] is None or ref[k] is None:
                continue
            diffs = draws[name][:, j] - draws[reference][:, j] if resamples else np.array([])
            diffs = diffs[~np.isnan(diffs)]
            low, high = np.percentile(diffs, [tail, 100 - tail]) if len(diffs) else (math.nan, math.nan)
            intervals[k] = Interval(full[k] - ref[k], float(low), float(high), s.n_images, level, unit="image")
        out[name] = intervals
    return out

"""Differences between models over seeds: mean, standard deviation and a paired t interval, in plain words."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass


@dataclass(frozen=True)
class Interval:
    """A difference over n seeds (or images) with its `level` confidence interval (low, high); NaN bounds for fewer
    than 2."""

    mean: float
    low: float
    high: float
    n: int
    level: float = 0.95
    unit: str = "seed"

    def verdict(self, model: str, reference: str) -> str:
        """Say whether the interval shows a difference, in words a reader cannot misread."""
        pct = f"{self.level:.0%}"
        if self.n < 2 and self.unit == "seed":
            return f"no interval: {self.n} seed (give seeds=0,1,... to tell a difference from noise)"
        if self.n < 2 or math.isnan(self.low):
            return f"no interval: {self.n} {self.unit}(s) to resample"
        if self.low > 0:
            return f"{model} higher than {reference}: the {pct} interval lies above 0"
        if self.high < 0:
            return f"{model} lower than {reference}: the {pct} interval lies below 0"
        return f"no difference shown: the {pct} interval includes 0"


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def paired_t_interval(values: list[float], reference: list[float], level: float = 0.95) -> Interval:
    """The mean of the per-seed differences values[k] - reference[k], with a t interval over the n seeds.

    mean ± t(1 - (1 - level) / 2, n - 1) * sd / sqrt(n); with identical differences the interval has width 0.
    """
    if len(values) != len(reference):
        raise ValueError(f"paired differences need one value per seed on both sides, got {len(values)} and "
                         f"{len(reference)}")  # fmt: skip
    diffs = [v - r for v, r in zip(values, reference)]
    n = len(diffs)
    mean, sd = mean_std(diffs)
    if n < 2:
        return Interval(mean, math.nan, math.nan, n, level)
    from scipy import stats  # here: only intervals over seeds need scipy (0.6 s to import)

    half = stats.t.ppf(1 - (1 - level) / 2, n - 1) * sd / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, n, level)

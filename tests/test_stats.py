"""compare's statistics over seeds: the paired t interval against hand-computed cases."""

from __future__ import annotations

import math

import pytest

from ultra_solo.compare.stats import mean_std, paired_t_interval


def test_paired_t_interval_by_hand():
    # differences 0.1, 0.2, 0.2: mean 1/6, sd sqrt(1/300), t(0.975, 2) = 4.302653
    iv = paired_t_interval([0.5, 0.6, 0.7], [0.4, 0.4, 0.5])
    half = 4.302653 * math.sqrt(1 / 300) / math.sqrt(3)
    assert iv.n == 3 and iv.mean == pytest.approx(1 / 6)
    assert (iv.low, iv.high) == pytest.approx((1 / 6 - half, 1 / 6 + half), abs=1e-6)
    assert iv.verdict("b", "a") == "b higher than a: the 95% interval lies above 0"
    assert paired_t_interval([0.4, 0.4, 0.5], [0.5, 0.6, 0.7]).verdict("a", "b").startswith("a lower than b")


def test_identical_models_give_a_zero_width_interval_containing_zero():
    iv = paired_t_interval([0.31, 0.35, 0.29], [0.31, 0.35, 0.29])
    assert (iv.mean, iv.low, iv.high) == (0.0, 0.0, 0.0)
    assert iv.verdict("b", "a") == "no difference shown: the 95% interval includes 0"


def test_one_seed_has_no_interval_and_says_so():
    iv = paired_t_interval([0.4], [0.3])
    assert iv.mean == pytest.approx(0.1) and math.isnan(iv.low) and math.isnan(iv.high)
    assert iv.verdict("b", "a").startswith("no interval: 1 seed")
    assert mean_std([0.4]) == (0.4, 0.0)


def test_unpaired_values_are_refused():
    with pytest.raises(ValueError, match="one value per seed"):
        paired_t_interval([0.1, 0.2], [0.1])

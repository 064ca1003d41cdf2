"""The paired bootstrap over validation images: resampled COCO AP against duplicated data sets, known differences."""

from __future__ import annotations

import numpy as np
import pytest

from ultra_solo.compare.bootstrap import paired_bootstrap
from ultra_solo.compare.cocoeval import COCOScores, coco_metrics, scored_detections

from .test_compare import rle

SIDE = 64  # every image: one 20 x 20 square object (small: under 32^2 px) at a position of its own


def square(i: int, shift: int = 0) -> np.ndarray:
    """Image i's object, shifted `shift` px to the right (a boundary error)."""
    mask = np.zeros((SIDE, SIDE), np.uint8)
    x = 4 + 3 * (i % 10) + shift
    mask[20:40, x : x + 20] = 1
    return mask


def data_set(objects: list[int]) -> dict:
    """COCO ground truth of images whose objects are `square(objects[j])`."""
    images = [{"id": j, "file_name": f"{j}.jpg", "height": SIDE, "width": SIDE} for j in range(len(objects))]
    annotations = [{"id": j + 1, "image_id": j, "category_id": 1, "segmentation": rle(square(i)),
                    "bbox": [4 + 3 * (i % 10), 20, 20, 20], "area": 400.0, "iscrowd": 0}
                   for j, i in enumerate(objects)]  # fmt: skip
    return {"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "square"}]}


def predictions(objects: list[int], found: dict[int, list[tuple[int, float]]]) -> list[dict]:
    """Detections per image j of `objects`: found[j] = [(shift, score), ...]."""
    return [{"file_name": f"{j}.jpg", "category_id": 1, "score": score, "segmentation": rle(square(objects[j], shift)),
             "bbox": [4 + 3 * (objects[j] % 10) + shift, 20, 20, 20]}
            for j, dets in found.items() for shift, score in dets]  # fmt: skip


def imperfect(n: int) -> dict[int, list[tuple[int, float]]]:
    """Per image: a detection shifted 0-2 px and a duplicate shifted further (a false positive), random scores."""
    rng = np.random.default_rng(1)
    return {j: [(int(rng.integers(0, 3)), float(rng.random())), (7, float(rng.random()))] for j in range(n)}


def test_resampled_metrics_equal_those_of_a_data_set_with_the_images_repeated():
    objects = list(range(6))
    found = imperfect(6)
    draw = [4, 0, 4, 4, 1, 5]  # image 4 three times, 2 and 3 not at all
    scores = COCOScores(data_set(objects), predictions(objects, found))
    repeated = [objects[j] for j in draw]
    reference = coco_metrics(data_set(repeated), predictions(repeated, {k: found[j] for k, j in enumerate(draw)}))
    assert 0.1 < reference["coco_mask_mAP50-95"] < 0.9 and 0.0 < reference["boundary_mAP50-95"] < 0.9
    assert scores.metrics(np.array(draw)) == pytest.approx(reference, abs=1e-12)
    assert scores.metrics() == pytest.approx(coco_metrics(data_set(objects), predictions(objects, found)), abs=1e-12)


def test_a_model_that_misses_half_the_objects_has_a_known_difference_and_an_interval_below_zero():
    """Ten images, one object each. `perfect` finds all, `half` only the first five: recall 0.5 at precision 1, so at
    every IoU threshold half's 101-point AP is 51 / 101 (recall thresholds 0, 0.01, ..., 0.5) against 1."""
    objects = list(range(10))
    gt = data_set(objects)
    perfect = COCOScores(gt, predictions(objects, {j: [(0, 0.9)] for j in range(10)}))
    half = COCOScores(gt, predictions(objects, {j: [(0, 0.9)] for j in range(5)}))
    intervals = paired_bootstrap({"perfect": perfect, "half": half}, "perfect", resamples=200)["half"]
    for key in ("coco_mask_mAP50-95", "coco_mask_mAP50", "boundary_mAP50-95", "mask_mAP_small"):
        iv = intervals[key]
        assert iv.mean == pytest.approx(51 / 101 - 1) and iv.n == 10
        assert iv.low <= iv.mean <= iv.high < 0  # missing none of the 5 in 10 draws: chance 2^-10 per resample
        assert iv.verdict("half", "perfect").startswith("half lower than perfect")
    assert "mask_mAP_medium" not in intervals and "mask_mAP_large" not in intervals  # no such objects: no AP


def test_identical_models_differ_by_exactly_zero():
    objects = list(range(8))
    gt, found = data_set(objects), imperfect(8)
    a, b = COCOScores(gt, predictions(objects, found)), COCOScores(gt, predictions(objects, found))
    for iv in paired_bootstrap({"a": a, "b": b}, "a", resamples=50)["b"].values():
        assert iv.mean == iv.low == iv.high == 0.0
        assert iv.verdict("b", "a").startswith("no difference shown")


def test_models_scored_on_other_images_are_refused():
    one, two = COCOScores(data_set([0]), []), COCOScores(data_set([0, 1]), [])
    with pytest.raises(ValueError, match="same validation images"):
        paired_bootstrap({"one": one, "two": two}, "one", resamples=5)


def test_only_the_detections_coco_scores_are_kept():
    dets = [{"image_id": i % 2, "category_id": 1, "score": s} for i, s in enumerate([0.5, 0.1, 0.9, 0.5, 0.3, 0.9])]
    assert scored_detections(dets, max_dets=2) == [dets[0], dets[2], dets[3], dets[5]]  # ties: the earlier first

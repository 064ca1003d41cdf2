"""Matrix NMS against a brute-force reference, point NMS, decoding edge cases and mask boxes."""

from __future__ import annotations

import math

import pytest
import torch

from ultra_solo.models.solov2.head import point_nms
from ultra_solo.models.solov2.postprocess import (
    DecodeSettings,
    decode_image,
    decode_static,
    detections,
    mask_boxes,
    matrix_nms,
)

SETTINGS = DecodeSettings(num_grids=(4, 2), strides=(8, 16))  # R = 16 + 4 cells


def brute_force_decay(masks, labels, kernel, sigma):
    """Matrix NMS written out pair by pair from the SOLOv2 paper (masks sorted by descending score)."""
    n = len(masks)
    m = masks.float()

    def iou(a, b):
        inter = (m[a] * m[b]).sum()
        return float(inter / (m[a].sum() + m[b].sum() - inter))

    def f(x):
        return math.exp(-sigma * x * x) if kernel == "gaussian" else 1 - x

    own = [max([iou(i, k) for i in range(k) if labels[i] == labels[k]], default=0.0) for k in range(n)]
    decay = []
    for j in range(n):  # the top mask (own = 0) bounds every decay by 1; a fully suppressed mask suppresses nothing
        terms = [f(iou(k, j)) / f(own[k]) if f(own[k]) else math.inf for k in range(j) if labels[k] == labels[j]]
        decay.append(min([1.0, *terms]))
    return torch.tensor(decay)


@pytest.mark.parametrize("kernel", ["gaussian", "linear"])
def test_matrix_nms_matches_brute_force(kernel):
    g = torch.Generator().manual_seed(0)
    for _ in range(5):
        n = 12
        masks = torch.rand(n, 20, 20, generator=g) > torch.rand(n, 1, 1, generator=g)  # varied densities and IoUs
        masks[1] = masks[0]  # an exact duplicate: IoU 1, compensated for the linear kernel
        labels = torch.randint(0, 3, (n,), generator=g)
        flat = masks.flatten(1)
        got = matrix_nms(flat, labels, flat.sum(1), kernel=kernel, sigma=2.0)
        expected = brute_force_decay(flat, labels, kernel, 2.0)
        assert torch.allclose(got, expected.float(), atol=1e-5)


def test_matrix_nms_classes_do_not_suppress_each_other():
    mask = torch.zeros(1, 100, dtype=torch.bool)
    mask[0, :50] = True
    masks = mask.repeat(3, 1)  # three identical masks
    areas = masks.sum(1)
    same = matrix_nms(masks, torch.tensor([0, 0, 0]), areas)
    assert same[0] == 1 and same[1] < 0.2  # exp(-2 * 1^2) = 0.135
    mixed = matrix_nms(masks, torch.tensor([0, 1, 2]), areas)
    assert torch.equal(mixed, torch.ones(3))


def test_matrix_nms_batched_equals_one_by_one():
    g = torch.Generator().manual_seed(1)
    masks = (torch.rand(3, 7, 64, generator=g) > torch.rand(3, 7, 1, generator=g)).float()  # (B, n, M)
    labels = torch.randint(0, 2, (3, 7), generator=g)
    batched = matrix_nms(masks, labels, masks.sum(2))
    assert torch.equal(batched, torch.stack([matrix_nms(m, lab, m.sum(1)) for m, lab in zip(masks, labels)]))


def test_point_nms_keeps_local_maxima():
    scores = torch.tensor([[0.1, 0.9, 0.2], [0.3, 0.4, 0.8], [0.7, 0.1, 0.6]])[None, None]
    kept = point_nms(scores)[0, 0]
    # each cell is compared with the 2x2 window ending at it (up-left neighbours)
    expected = torch.tensor([[0.1, 0.9, 0.0], [0.3, 0.0, 0.0], [0.7, 0.0, 0.0]])  # 0.8 loses to 0.9 up-left
    assert torch.allclose(kept, expected)


def one_object_outputs():
    """Dense outputs of a 20-cell model where cell 5 sees a 6x6 square of class 2 on an 8x8 mask-feature map."""
    scores = torch.zeros(20, 3)
    scores[5, 2] = 0.9
    kernels = torch.zeros(20, 1)
    kernels[5] = 1.0
    feats = torch.full((1, 8, 8), -10.0)
    feats[0, 1:7, 2:8] = 10.0
    return scores, kernels, feats


def test_decode_one_object():
    probs, conf, cls = decode_image(*one_object_outputs(), SETTINGS, conf=0.1, max_det=10)
    assert cls.tolist() == [2]
    assert conf[0] == pytest.approx(0.9, abs=1e-3)  # maskness ~1, no other mask to decay it
    assert ((probs[0] > 0.5) == (one_object_outputs()[2][0] > 0)).all()


@pytest.mark.parametrize("conf, max_det", [(1.0, 10), (0.1, 0), (0.95, 10)])
def test_decode_edge_values_give_empty_results(conf, max_det):
    probs, scores, cls = decode_image(*one_object_outputs(), SETTINGS, conf=conf, max_det=max_det)
    assert probs.shape == (0, 8, 8) and scores.shape == (0,) and cls.shape == (0,)


def test_decode_drops_masks_not_larger_than_stride():
    scores, kernels, feats = one_object_outputs()
    feats[0] = -10.0
    feats[0, 0, :8] = 10.0  # 8 pixels: not larger than level 0's stride 8
    probs, conf, _ = decode_image(scores, kernels, feats, SETTINGS, conf=0.1, max_det=10)
    assert len(conf) == 0


def test_mask_boxes_cover_whole_pixels():
    masks = torch.zeros(2, 10, 12, dtype=torch.bool)
    masks[0, 2:5, 3:9] = True  # rows 2-4, cols 3-8
    boxes = mask_boxes(masks)
    assert boxes.tolist() == [[3.0, 2.0, 9.0, 5.0], [0.0, 0.0, 0.0, 0.0]]


def random_dense_outputs(batch: int, gen: torch.Generator):
    """Dense outputs (B, 20, 3), (B, 20, 8), (B, 8, 16, 16) with many candidates, overlapping and small masks."""
    scores = torch.rand(batch, 20, 3, generator=gen) ** 2  # about 2/3 above conf 0.1, 45% above 0.3
    kernels = torch.randn(batch, 20, 8, generator=gen)
    kernels[:, ::4] -= 3  # some mostly-negative kernels: masks small enough for the stride filter
    feats = torch.randn(batch, 8, 16, 16, generator=gen)
    return scores, kernels, feats


@pytest.mark.parametrize("nms_pre, max_det", [(60, 100), (30, 100), (60, 5)])
def test_static_decode_matches_decode_image(nms_pre, max_det):
    """The end2end graph's fixed-size decode gives `decode_image`'s detections, padded with zero scores."""
    settings = DecodeSettings(num_grids=(4, 2), strides=(8, 16), nms_pre=nms_pre)
    dense = random_dense_outputs(4, torch.Generator().manual_seed(2))
    static = decode_static(*dense, settings, conf=0.1, max_det=max_det)
    assert static[0].shape == static[1].shape == (4, min(max_det, nms_pre)) and static[2].shape[2:] == (16, 16)
    found = 0
    for i, (s, k, f) in enumerate(zip(*dense)):
        probs, conf, cls = decode_image(s, k, f, settings, conf=0.1, max_det=max_det)
        n = len(conf)
        found += n
        assert int((static[0][i] > 0).sum()) == n
        assert torch.allclose(static[0][i, :n], conf, atol=1e-6) and torch.equal(static[1][i, :n], cls)
        assert torch.allclose(static[2][i, :n], probs, atol=1e-6)
    assert found > 8
    # decoded with conf 0.1, then filtered at conf 0.3: exactly the detections of decoding with conf 0.3
    end2end = DecodeSettings(num_grids=(4, 2), strides=(8, 16), nms_pre=nms_pre, end2end=True)
    for (p1, c1, k1), (p2, c2, k2) in zip(detections(static, end2end, 0.3, 3), detections(dense, settings, 0.3, 3)):
        assert torch.equal(k1, k2) and torch.allclose(c1, c2, atol=1e-6) and torch.allclose(p1, p2, atol=1e-6)

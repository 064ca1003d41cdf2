"""Matrix NMS and decoding against brute-force references, point NMS, decoding edge cases, class filters."""

from __future__ import annotations

import math

import pytest
import torch

from ultra_solo.models.solov2.decode import (
    DecodeSettings,
    block_statistics,
    decode,
    detections,
    intersections,
    matrix_nms,
    sorted_intersections,
    voted_probs,
)
from ultra_solo.models.solov2.head import point_nms
from ultra_solo.models.solov2.layout import GridLayout

LAYOUT = GridLayout(num_grids=(4, 2), strides=(8, 16))  # R = 16 + 4 cells
SETTINGS = DecodeSettings(LAYOUT)


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


@pytest.mark.parametrize("k, n", [(40, 40), (40, 13), (9, 1), (9, 0), (33, 33), (200, 150)])
def test_sorted_intersections_count_every_pair_matrix_nms_reads(k, n):
    """On and above the diagonal, in score order: the brute-force counts of the picked masks, in blocks or not (blocks
    of at least 64 masks: 150 masks make 2 or 3)."""
    gen = torch.Generator().manual_seed(k + n)
    masks = (torch.rand(2, k, 70, generator=gen) > 0.6).float()
    order = torch.stack([torch.randperm(k, generator=gen)[:n] for _ in range(2)])  # (2, n)
    upper = torch.ones(n, n, dtype=torch.bool).triu()
    for b in range(2):
        picked = masks[b, order[b]]
        expected = [(picked[i] * picked).sum(1).tolist() for i in range(n)]  # counts of mask i with every mask
        for blocks in (1, 3, 4):
            got = sorted_intersections(masks, order, blocks)[b]
            assert got[upper].tolist() == torch.tensor(expected).reshape(n, n)[upper].tolist()


def test_intersections_count_every_pair_exactly():
    g = torch.Generator().manual_seed(2)
    masks = (torch.rand(2, 37, 70_000, generator=g) > torch.rand(2, 37, 1, generator=g)).float()  # counts above 2**16
    masks[0, 3] = 1  # a full mask: its counts are the other masks' areas
    got = intersections(masks)
    brute = torch.stack([torch.stack([(m * m[j]).sum(1) for j in range(len(m))], 1) for m in masks])
    assert got.dtype == torch.float32 and torch.equal(got, brute)
    assert torch.equal(got[0, 3], masks[0].sum(1)) and got.amax() > 2**16
    assert intersections(masks[:, :0]).shape == (2, 0, 0)


def test_point_nms_keeps_local_maxima():
    scores = torch.tensor([[0.1, 0.9, 0.2], [0.3, 0.4, 0.8], [0.7, 0.1, 0.6]])[None, None]
    kept = point_nms(scores)[0, 0]
    # each cell is compared with the 2x2 window ending at it (up-left neighbours)
    expected = torch.tensor([[0.1, 0.9, 0.0], [0.3, 0.0, 0.0], [0.7, 0.0, 0.0]])  # 0.8 loses to 0.9 up-left
    assert torch.allclose(kept, expected)


def one_object_outputs():
    """Dense outputs of a 20-cell model where cell 5 sees a 6x6 square of class 2 on an 8x8 mask-feature map."""
    scores = torch.zeros(1, 20, 3)
    scores[0, 5, 2] = 0.9
    kernels = torch.zeros(1, 20, 1)
    kernels[0, 5] = 1.0
    feats = torch.full((1, 1, 8, 8), -10.0)
    feats[0, 0, 1:7, 2:8] = 10.0
    return scores, kernels, feats


def test_decode_one_object():
    [(probs, conf, cls)] = detections(one_object_outputs(), SETTINGS, conf=0.1, max_det=10)
    assert cls.tolist() == [2]
    assert conf[0] == pytest.approx(0.9**SETTINGS.score_exponent, abs=1e-3)  # maskness ~1, no other mask to decay it
    assert ((probs[0] > 0.5) == (one_object_outputs()[2][0, 0] > 0)).all()


@pytest.mark.parametrize("conf, max_det", [(1.0, 10), (0.1, 0), (0.95, 10)])
def test_decode_edge_values_give_empty_results(conf, max_det):
    [(probs, scores, cls)] = detections(one_object_outputs(), SETTINGS, conf=conf, max_det=max_det)
    assert probs.shape == (0, 8, 8) and scores.shape == (0,) and cls.shape == (0,)


def test_decode_drops_masks_not_larger_than_stride():
    scores, kernels, feats = one_object_outputs()
    feats[0] = -10.0
    feats[0, 0, 0, :8] = 10.0  # 8 pixels: not larger than level 0's stride 8
    [(probs, conf, _)] = detections((scores, kernels, feats), SETTINGS, conf=0.1, max_det=10)
    assert len(conf) == 0


def random_dense_outputs(batch: int, gen: torch.Generator):
    """Dense outputs (B, 20, 3), (B, 20, 8), (B, 8, 16, 16) with many candidates, overlapping and small masks."""
    scores = torch.rand(batch, 20, 3, generator=gen) ** 2  # about 2/3 above conf 0.1, 45% above 0.3
    kernels = torch.randn(batch, 20, 8, generator=gen)
    kernels[:, ::4] -= 3  # some mostly-negative kernels: masks small enough for the stride filter
    feats = torch.randn(batch, 8, 16, 16, generator=gen)
    return scores, kernels, feats


def brute_force_decode(scores, kernels, feats, settings, conf, max_det, agnostic=False):
    """The SOLOv2 decoding of one image written out candidate by candidate (MMDetection's order of steps).

    With `settings.layout.offsets` the last two kernel weights (a, b) of cell c add a * |x - cx| * S + b * |y - cy| * S
    at each mask pixel, computed here pixel by pixel from the cell's row, column and grid size.
    """
    layout = settings.layout
    strides, e, (h, w) = layout.cell_strides(), feats.shape[0], feats.shape[1:]
    exponent = math.log(0.25 * 0.8) / math.log(0.25 * 0.8**settings.maskness_power)  # SOLOv2's scale for conf
    found = []
    for cell, cls in (scores**exponent > conf).nonzero().tolist():  # a final score is at most this
        logits = torch.einsum("e,ehw->hw", kernels[cell, :e], feats)
        if layout.offsets:
            level = next(
                i for i, s in enumerate(layout.num_grids) if cell < sum(g * g for g in layout.num_grids[: i + 1])
            )
            s = layout.num_grids[level]
            local = cell - sum(g * g for g in layout.num_grids[:level])
            cy, cx = (local // s + 0.5) / s, (local % s + 0.5) / s
            for i in range(h):
                for j in range(w):
                    dx, dy = abs((j + 0.5) / w - cx) * s, abs((i + 0.5) / h - cy) * s
                    logits[i, j] += kernels[cell, e] * dx + kernels[cell, e + 1] * dy
        probs = logits.sigmoid()
        mask = probs > settings.mask_thr
        if mask.sum() > strides[cell]:
            found.append((float(scores[cell, cls] * probs[mask].mean() ** settings.maskness_power), cls, probs, mask))
    found = sorted(found, key=lambda f: -f[0])[: settings.nms_pre]
    if not found:
        return []
    labels = [0 if agnostic else f[1] for f in found]
    decay = brute_force_decay(torch.stack([f[3].flatten() for f in found]), labels, settings.kernel, settings.sigma)
    kept = sorted(
        ((float(s * d) ** exponent, c, brute_force_vote(found, i, labels, settings.vote_thr, conf ** (1 / exponent)))
         for i, ((s, c, _, _), d) in enumerate(zip(found, decay))),
        key=lambda f: -f[0],
    )  # fmt: skip
    return [f for f in kept if f[0] >= conf][:max_det]


def brute_force_vote(found: list, i: int, labels: list, thr: float, need: float) -> torch.Tensor:
    """Candidate i's probabilities after mask voting: the mean of the probabilities of the candidates of its class
    that can reach conf (score at least `need`) whose masks overlap its own with IoU above `thr`, weighted by their
    scores; its own probabilities without voting (`thr` 0)."""
    if not thr:
        return found[i][2]
    mask = found[i][3]
    votes = [
        (s, p)
        for j, (s, _, p, m) in enumerate(found)
        if labels[j] == labels[i] and s >= need and float((mask & m).sum() / (mask | m).sum()) > thr
    ]
    if not votes:  # it cannot reach conf itself: not a detection
        return found[i][2]
    return sum(s * p for s, p in votes) / sum(s for s, _ in votes)


@pytest.mark.parametrize("power", [1, 2, 6])
def test_score_exponent_keeps_solov2s_scale_at_the_anchor(power):
    # A candidate of category score 0.25 and maskness 0.8 scores SOLOv2's 0.25 x 0.8 whatever the power.
    settings = DecodeSettings(GridLayout((4, 2), (8, 16), False), maskness_power=power)
    assert (0.25 * 0.8**power) ** settings.score_exponent == pytest.approx(0.2)
    assert power != 1 or settings.score_exponent == 1


@pytest.mark.parametrize(
    "agnostic, offsets, power, vote",
    [
        (False, False, 1, 0.0),
        (True, False, 1, 0.0),
        (False, True, 1, 0.0),
        (False, False, 2, 0.0),
        (False, True, 6, 0.0),
        (False, True, 6, 0.314),
        (True, False, 1, 0.512),
    ],
)
def test_decode_matches_brute_force(agnostic, offsets, power, vote):
    layout = GridLayout((4, 2), (8, 16), offsets)
    settings = DecodeSettings(layout, nms_pre=60, maskness_power=power, vote_thr=vote)
    scores, kernels, feats = random_dense_outputs(3, torch.Generator().manual_seed(3))
    if offsets:  # two more kernel weights, mostly negative: masks fade with the distance from their cell
        kernels = torch.cat(
            (kernels, -torch.rand(*kernels.shape[:2], 2, generator=torch.Generator().manual_seed(4))), 2
        )
    dense = scores, kernels, feats
    found = 0
    for image, (probs, conf, cls) in zip(zip(*dense), detections(dense, settings, 0.1, 30, agnostic=agnostic)):
        expected = brute_force_decode(*image, settings, 0.1, 30, agnostic)
        found += len(expected)
        assert torch.allclose(conf, torch.tensor([e[0] for e in expected]), atol=1e-5)
        assert cls.tolist() == [e[1] for e in expected]
        assert all(torch.allclose(p, e[2], atol=1e-6) for p, e in zip(probs, expected))
    assert found > 8
    if vote:  # the voted masks are not the candidates' own
        plain = detections(dense, DecodeSettings(layout, nms_pre=60, maskness_power=power), 0.1, 30, agnostic=agnostic)
        voted = detections(dense, settings, 0.1, 30, agnostic=agnostic)
        assert sum(not torch.equal(a[0], b[0]) for a, b in zip(plain, voted)) >= 2
        assert all(torch.equal(a[1], b[1]) for a, b in zip(plain, voted))  # scores unchanged


@pytest.mark.parametrize("nms_pre, max_det, vote", [(60, 100, 0.0), (30, 100, 0.0), (60, 5, 0.0), (60, 100, 0.314)])
def test_graph_decode_matches_python_path(nms_pre, max_det, vote):
    """The end2end graph's decode (K = nms_pre for every image) gives the Python path's detections (K = candidates
    above conf), padded with zero scores; decoded at conf 0.1 and then filtered at 0.3, the detections of conf 0.3
    (with mask voting their masks differ: the candidates that can reach conf 0.1 vote too)."""
    settings = DecodeSettings(LAYOUT, nms_pre=nms_pre, vote_thr=vote)
    dense = random_dense_outputs(4, torch.Generator().manual_seed(2))
    graph = decode(*dense, settings, conf=0.1, max_det=max_det)
    assert graph[0].shape == graph[1].shape == (4, min(max_det, nms_pre)) and graph[2].shape[2:] == (16, 16)
    found = 0
    for i, (probs, conf, cls) in enumerate(detections(dense, settings, conf=0.1, max_det=max_det)):
        n = len(conf)
        found += n
        assert int((graph[0][i] > 0).sum()) == n
        assert torch.allclose(graph[0][i, :n], conf, atol=1e-6) and torch.equal(graph[1][i, :n], cls)
        assert torch.allclose(graph[2][i, :n], probs, atol=1e-6)
    assert found > 8
    end2end = DecodeSettings(LAYOUT, nms_pre=nms_pre, vote_thr=vote, end2end=True)
    for (p1, c1, k1), (p2, c2, k2) in zip(detections(graph, end2end, 0.3, 3), detections(dense, settings, 0.3, 3)):
        assert torch.equal(k1, k2) and torch.allclose(c1, c2, atol=1e-6)
        assert vote or torch.allclose(p1, p2, atol=1e-6)


@pytest.mark.parametrize("block", [32, 5, 1000])
def test_block_statistics_equal_each_step_over_all_candidates(block):
    """Sigmoid, threshold, areas and sums inside the masks, block by block: bitwise the whole-tensor steps."""
    logits = torch.randn(2, 77, 96, generator=torch.Generator().manual_seed(block)) * 4  # (B, K, h*w), K % 32 != 0
    logits[0, 3] = -9  # an empty mask
    probs = logits.sigmoid()
    masks = (probs > 0.5).float()
    got = block_statistics(logits.clone(), 0.5, block)
    assert got[1].dtype == torch.int8
    for g, expected in zip(got, (probs, masks, masks.sum(2), (probs * masks).sum(2))):
        assert torch.equal(g.float(), expected)


@pytest.mark.parametrize("end2end, vote", [(False, 0.0), (True, 0.0), (False, 0.314)])
def test_detections_with_masks_give_the_probabilities_above_the_threshold(end2end, vote):
    settings = DecodeSettings(LAYOUT, nms_pre=60, mask_thr=0.6, vote_thr=vote)
    dense = random_dense_outputs(3, torch.Generator().manual_seed(5))
    if end2end:
        dense, settings = decode(*dense, settings, 0.1, 30), DecodeSettings(LAYOUT, mask_thr=0.6, end2end=True)
    found = 0
    for plain, (probs, conf, cls, masks) in zip(
        detections(dense, settings, 0.1, 30), detections(dense, settings, 0.1, 30, with_masks=True)
    ):
        found += len(conf)
        assert all(torch.equal(a, b) for a, b in zip(plain, (probs, conf, cls)))
        assert masks.dtype == torch.bool and torch.equal(masks, probs > 0.6)
    assert found > 8


@pytest.mark.parametrize("vote_thr", [0.0, 0.5])
def test_compact_decode_carries_only_candidates_that_can_reach_conf(vote_thr):
    """The Python path's Matrix NMS runs over the candidates whose rescored score can still reach conf, and it keeps
    (and votes) only the detections that reached it: the same detections as the fixed-size decode, whose extra slots
    are all empty."""
    settings = DecodeSettings(LAYOUT, nms_pre=60, vote_thr=vote_thr)
    dense = random_dense_outputs(1, torch.Generator().manual_seed(5))
    full = decode(*dense, settings, conf=0.3, max_det=100)
    compact = decode(*dense, settings, conf=0.3, max_det=100, compact=True)
    n, found = compact[0].shape[1], int((full[0] > 0).sum())  # slots; detections, first in both
    assert 0 < found == n < full[0].shape[1]
    assert not full[0][:, found:].any()
    torch.testing.assert_close(compact[0], full[0][:, :n])
    assert torch.equal(compact[1][:, :found], full[1][:, :found])
    assert torch.equal(compact[2][:, :found], full[2][:, :found])


@pytest.mark.parametrize("voters", [1, 3])
def test_sparse_and_dense_mask_voting_agree(voters):
    """`voted_probs` pools one image's votes with `pool_votes` from `sparse_from` weights on, else by a dense product:
    the same probabilities, and a detection without voters besides itself keeps its own row exactly."""
    g = torch.Generator().manual_seed(voters)
    probs, order = torch.rand(1, 12, 50, generator=g), torch.randperm(12, generator=g)[None, :9]  # (1, K, P), (1, n)
    unsorted = order[:, [0, 2, 5, 7]]  # (1, D) detections among the sorted candidates 0, 2, 5, 7
    weights = torch.zeros(1, 4, 9)
    weights[0, torch.arange(4), torch.tensor([0, 2, 5, 7])] = torch.rand(4, generator=g) + 0.1  # each votes for itself
    weights[0, :2, 3 : 3 + voters] = torch.rand(2, voters, generator=g)  # the first two have other voters
    weights[0, 2] = weights[0, 0]  # a row of weights twice (`pool_votes` pools each distinct row once)
    sparse = voted_probs(probs, order, unsorted, weights, sparse_from=0)
    dense = voted_probs(probs, order, unsorted, weights, sparse_from=10**9)
    torch.testing.assert_close(sparse, dense)
    expected = (weights[0] / weights[0].sum(1, keepdim=True)) @ probs[0, order[0]]  # (D, P) by definition
    torch.testing.assert_close(sparse[0], expected)
    assert torch.equal(sparse[0, 3], probs[0, unsorted[0, 3]])  # only its own vote


def two_classes_one_mask():
    """Cells 0 and 1 predict the same mask, as class 0 (0.9) and class 1 (0.8); cell 2 predicts class 2 elsewhere."""
    scores = torch.zeros(1, 20, 3)
    scores[0, 0, 0], scores[0, 1, 1], scores[0, 2, 2] = 0.9, 0.8, 0.7
    kernels = torch.zeros(1, 20, 2)
    kernels[0, :2, 0] = 1.0
    kernels[0, 2, 1] = 1.0
    feats = torch.full((1, 2, 8, 8), -10.0)
    feats[0, 0, :4] = 10.0  # top half
    feats[0, 1, 4:] = 10.0  # bottom half
    return scores, kernels, feats


def test_class_filter_and_agnostic_nms():
    e = SETTINGS.score_exponent  # final scores are SOLOv2's to this power
    [(_, conf, cls)] = detections(two_classes_one_mask(), SETTINGS, conf=0.1, max_det=10)
    assert cls.tolist() == [0, 1, 2]  # per-class Matrix NMS: a class does not suppress another
    [(_, conf, cls)] = detections(two_classes_one_mask(), SETTINGS, conf=0.1, max_det=10, agnostic=True)
    assert cls.tolist() == [0, 2, 1] and conf[2] < 0.15**e  # class 1 duplicates class 0: decayed by exp(-2)
    [(_, conf, cls)] = detections(two_classes_one_mask(), SETTINGS, conf=0.1, max_det=10, classes=[1, 2])
    assert cls.tolist() == [1, 2]  # filtered before Matrix NMS, as YOLO's NMS filters classes
    [(_, conf, cls)] = detections(two_classes_one_mask(), SETTINGS, conf=0.1, max_det=10, min_score=0.75**e)
    assert cls.tolist() == [0, 1]

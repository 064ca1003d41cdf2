"""SOLO loss on real models of both heads: empty GT, one GT, gradients to every head parameter, dice values."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from ultra_solo.models.solov2.cfg import load_model_yaml
from ultra_solo.models.solov2.decode import detections
from ultra_solo.models.solov2.head import flatten_levels, raw_outputs
from ultra_solo.models.solov2.layout import GridLayout
from ultra_solo.models.solov2.loss import (
    band_dice_loss,
    band_radius,
    boundary_band,
    dice_loss,
    mask_iou,
    mask_probs,
    pixel_bce,
    positive_mask_logits,
    semantic_targets,
)
from ultra_solo.models.solov2.network import SOLOv2Model, decode_settings, solo_decoding


@pytest.fixture(scope="module", params=["solov2-n.yaml", "yolo11n-solo.yaml"])
def model(request):
    torch.manual_seed(0)
    m = SOLOv2Model(request.param, nc=3, verbose=False)
    m.args = {"overlap_mask": False}
    return m


def batch(n_instances: int, size: int = 128):
    """A 2-image batch; instance k is a 48 px square in image 0."""
    masks = torch.zeros(n_instances, size // 4, size // 4)
    for k in range(n_instances):
        masks[k, 4 + 4 * k : 16 + 4 * k, 4:16] = 1  # mask px [4+4k, 16+4k) -> input px [16+16k, 64+16k)
    boxes = torch.tensor([[40 / size, (40 + 16 * k) / size, 48 / size, 48 / size] for k in range(n_instances)])
    return {
        "img": torch.rand(2, 3, size, size),
        "masks": masks,
        "cls": torch.ones(n_instances, 1),
        "bboxes": boxes.view(-1, 4),
        "batch_idx": torch.zeros(n_instances),
    }


def head_grads(model, b):
    model.zero_grad()
    loss, items = model(b)
    loss.sum().backward()
    head = model.model[-1]
    return items, {n: p.grad for n, p in head.named_parameters()}


def test_empty_ground_truth(model):
    items, grads = head_grads(model, batch(0))
    assert items["cls_loss"] > 0
    assert items["mask_loss"] == 0
    assert all(g is not None for g in grads.values()), "every head parameter stays in the graph (DDP)"


def test_one_instance(model):
    items, grads = head_grads(model, batch(1))
    assert items["cls_loss"] > 0 and items["mask_loss"] > 0
    assert torch.isfinite(torch.stack(list(items.values()))).all()
    assert all(g is not None for g in grads.values())


def test_every_head_parameter_learns_from_instances_of_every_size(model):
    size = 256
    b = {"img": torch.rand(1, 3, size, size), "cls": torch.ones(4, 1), "batch_idx": torch.zeros(4)}
    b["masks"], boxes = torch.zeros(4, size // 4, size // 4), []
    for k, (top, side) in enumerate([(4, 3), (10, 8), (22, 20), (4, 60)]):  # mask px; 12 to 240 input px
        b["masks"][k, top : top + side, 2 : 2 + side] = 1
        boxes.append([(2 + side / 2) * 4 / size, (top + side / 2) * 4 / size, side * 4 / size, side * 4 / size])
    b["bboxes"] = torch.tensor(boxes)
    items, grads = head_grads(model, b)
    missing = [n for n, g in grads.items() if g is None or not g.abs().sum() > 0]
    # layers that start at zero output (YOLO11's P4/P5 laterals, BatchNorm scale 0): their scale learns first
    bn_scales = {n: p for n, p in model.model[-1].named_parameters() if n.endswith(".bn.weight")}
    silent = [n.removesuffix(".bn.weight") for n, p in bn_scales.items() if not p.any()]
    assert missing == [f"{n}.conv.weight" for n in silent], f"no gradient reaches {missing}"


@pytest.mark.parametrize("size", [320, 640])
def test_every_level_gets_positives_at_320_and_640(model, size):
    sides = [0.04, 0.08, 0.16, 0.32, 0.64, 0.9]  # instance side / imgsz: a spread from small to image-filling
    n, m = len(sides), size // 4
    masks, boxes = torch.zeros(n, m, m), []
    for k, f in enumerate(sides):  # one centred square per image, so no instance claims another's cells
        lo, side = round(m * (1 - f) / 2), round(m * f)
        masks[k, lo : lo + side, lo : lo + side] = 1
        boxes.append([0.5, 0.5, side / m, side / m])
    b = {"img": torch.zeros(n, 3, size, size), "masks": masks, "cls": torch.zeros(n, 1), "bboxes": torch.tensor(boxes),
         "batch_idx": torch.arange(n, dtype=torch.float32)}  # fmt: skip
    crit = model.init_criterion()
    _, _, assigned = crit.targets(b, (m, m))  # (B, R) instance index per cell, -1 for none
    per_level = [int((level >= 0).sum()) for level in assigned.split(crit.layout.level_sizes(), 1)]
    assert all(per_level), f"positive cells per level at imgsz {size}: {per_level}"


def test_loss_scales_with_batch_size(model):
    loss, items = model(batch(2))
    assert loss.item() == pytest.approx(2 * (items["cls_loss"] + items["mask_loss"]).item(), rel=1e-5)


def test_overlap_and_per_instance_layouts_give_the_same_loss(model):
    b = batch(1)
    per_instance = model.loss(b)[1]
    model.criterion.overlap = True
    b["masks"] = torch.stack([b["masks"][0], torch.zeros_like(b["masks"][0])]).to(torch.uint8)  # index maps
    overlap = model.loss(b)[1]
    model.criterion.overlap = False
    assert all(torch.isclose(per_instance[k], overlap[k]) for k in per_instance)


def test_dice_loss_values():
    target = torch.zeros(1, 4, 4)
    target[0, :2] = 1  # 8 pixels
    assert dice_loss(target, target, eps=0).item() == pytest.approx(0.0)
    assert dice_loss(1 - target, target, eps=0).item() == pytest.approx(1.0)
    half = target * 0.5  # a = 8 * 0.5 = 4, sum p^2 = 2, sum t^2 = 8 -> 1 - 8 / 10
    assert dice_loss(half, target, eps=0).item() == pytest.approx(0.2)


def test_pixel_bce_values():
    probs = torch.tensor([[[0.9, 0.2], [0.5, 0.99]]])
    target = torch.tensor([[[1.0, 0.0], [1.0, 1.0]]])
    expected = -(math.log(0.9) + math.log(0.8) + math.log(0.5) + math.log(0.99)) / 4
    assert pixel_bce(probs, target).item() == pytest.approx(expected, rel=1e-6)
    assert pixel_bce(target, target).item() == pytest.approx(0.0, abs=1e-5)  # clamped, never log(0)


def brute_force_band(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """Pixel by pixel: 1 where the window of chessboard radius `radius` (clipped to the image) holds both covered (> 0)
    and uncovered (< 1) area; for a binary mask, both values."""
    h, w = mask.shape
    band = torch.zeros_like(mask)
    for y in range(h):
        for x in range(w):
            window = mask[max(0, y - radius) : y + radius + 1, max(0, x - radius) : x + radius + 1]
            band[y, x] = float(window.max() > 0 and window.min() < 1)
    return band


@pytest.mark.parametrize("radius", [1, 2])
def test_boundary_band_of_a_square_and_a_corner_shape(radius):
    square = torch.zeros(12, 12)
    square[3:9, 4:10] = 1  # a 6 x 6 square
    expected = torch.zeros(12, 12)
    expected[3 - radius : 9 + radius, 4 - radius : 10 + radius] = 1  # dilated
    expected[3 + radius : 9 - radius, 4 + radius : 10 - radius] = 0  # minus eroded
    touching = torch.zeros(12, 12)
    touching[:5, 7:] = 1  # touches the image's top and right edges: no band along them
    touching[5:8, 10:] = 1
    band = boundary_band(torch.stack([square, touching]), radius)
    assert torch.equal(band[0], expected) and torch.equal(band[0], brute_force_band(square, radius))
    assert torch.equal(band[1], brute_force_band(touching, radius)) and band[1][0, 11] == 0


def test_boundary_band_of_coverage_masks():
    # coverage_targets: an edge pixel covered 0.25 or 0.75 is neither mask nor background; its window holds both.
    mask = torch.zeros(10, 10)
    mask[2:7, 3:8] = 1
    mask[7, 3:8] = 0.25  # the lower edge inside row 7
    mask[2:8, 8] = 0.75  # the right edge inside column 8
    band = boundary_band(mask[None], 1)[0]
    assert torch.equal(band, brute_force_band(mask, 1))
    assert band[7, 5] == 1 and band[8, 5] == 1 and band[5, 9] == 1  # the fractional pixels and their outer neighbours
    assert band[4, 5] == 0 and band[0, 0] == 0  # inside, fully covered; far outside


def test_coverage_ground_truth_is_the_area_average_of_input_resolution_masks(model):
    # coverage_targets: masks given at input resolution (mask_ratio 1), each loss pixel the fraction of its 4 x 4
    # input pixels the mask covers, by hand.
    b = batch(1)
    full = torch.zeros(1, 128, 128)
    full[0, 17:62, 18:64] = 1  # input px rows [17, 62), cols [18, 64): edges inside loss pixels
    b["masks"] = full
    crit = model.init_criterion()
    crit.coverage_targets = True
    gt, _, assigned = crit.targets(b, (32, 32))
    expected = torch.zeros(32, 32)
    for y in range(32):
        for x in range(32):
            expected[y, x] = full[0, 4 * y : 4 * y + 4, 4 * x : 4 * x + 4].mean()
    assert torch.allclose(gt[0], expected) and gt[0, 4, 4] == pytest.approx(3 / 4 * 2 / 4)  # rows 17-19, cols 18-19
    assert (assigned >= 0).any()
    assert dice_loss(gt, gt, eps=0).max().item() < 1e-6 and dice_loss((gt > 0.5).float(), gt, eps=0).min().item() > 1e-3


def test_band_radius_is_two_percent_of_the_diagonal():
    assert band_radius((160, 160)) == 5  # 0.02 * 226.3 = 4.5 -> 5
    assert band_radius((80, 80)) == 2 and band_radius((8, 8)) == 1  # at least one pixel


def test_band_dice_is_dice_over_the_band_pixels():
    torch.manual_seed(0)
    targets = torch.zeros(2, 30, 30)
    targets[0, 5:20, 8:25] = 1
    targets[1, 10:28, 2:12] = 1
    probs = torch.rand(2, 30, 30)
    radius = band_radius((30, 30))  # 0.02 * 42.4 -> 1
    expected = []
    for p, t in zip(probs, targets):
        inside = brute_force_band(t, radius).bool()
        a, b = p[inside], t[inside]  # only the band's pixels
        expected.append(1 - 2 * (a * b).sum() / ((a * a).sum() + (b * b).sum() + 2e-3))
    band = boundary_band(targets, radius)
    assert torch.allclose(band_dice_loss(probs, targets, band), torch.stack(expected), atol=1e-6)
    assert band_dice_loss(targets, targets, band).max().item() < 1e-3  # a perfect mask: no band loss


def test_mask_probs_upsample_probabilities_with_half_pixel_centres():
    logits = torch.tensor([[[0.0, math.log(3.0)]]])  # (1, 1, 2): probabilities 0.5, 0.75
    up = mask_probs(logits, (2, 4))[0, 0]  # output pixel centres 0.25, 0.75, 1.25, 1.75 in input pixels
    assert up.tolist() == pytest.approx([0.5, 0.5 + 0.25 * 0.25, 0.5 + 0.75 * 0.25, 0.75])
    assert torch.equal(mask_probs(logits, (1, 2)), logits.sigmoid())  # at the features' own size: no resampling


@pytest.mark.parametrize("loss_stride", [1, 2])
def test_finer_mask_loss_matches_its_definition(model, loss_stride):
    # The loss at input / loss_stride, by hand: the positives' logits at stride 4, their probabilities upsampled,
    # ground truth at input / loss_stride, dice (and BCE and the band dice) per positive.
    b = batch(2)
    crit = model.init_criterion()
    crit.loss_stride, crit.bce_weight, crit.band_weight = loss_stride, 0.5, 2.0
    raw = raw_outputs(model(b["img"]))  # training mode: the raw outputs
    size = (128 // loss_stride, 128 // loss_stride)
    gt, _, assigned = crit.targets(b, size)
    pos = assigned >= 0
    kernels, feats = flatten_levels(raw["kernels"]), raw["mask_feats"]
    logits = positive_mask_logits(crit.layout, kernels, feats, pos)
    probs = F.interpolate(logits.sigmoid()[:, None], size, mode="bilinear", align_corners=False)[:, 0]
    targets = gt[assigned[pos]]
    dice = torch.stack([1 - 2 * (p * t).sum() / ((p * p).sum() + (t * t).sum() + 2e-3) for p, t in zip(probs, targets)])
    bce = torch.stack([F.binary_cross_entropy(p.clamp(1e-6, 1 - 1e-6), t) for p, t in zip(probs, targets)])
    radius = band_radius(size)
    bands = boundary_band(targets, radius).bool()  # checked against brute force above
    band = torch.stack(
        [
            1 - 2 * (p[m] * t[m]).sum() / ((p[m] ** 2).sum() + t[m].sum() + 2e-3)
            for p, t, m in zip(probs, targets, bands)
        ]
    )
    expected = dice.mean() * crit.mask_weight + bce.mean() * 0.5 + band.mean() * 2.0
    assert gt.shape[1:] == size and crit(raw, b)[1]["mask_loss"].item() == pytest.approx(expected.item(), rel=1e-4)


def test_mask_iou_values():
    probs = torch.zeros(3, 4, 4)
    probs[0, :2, :2] = 0.9  # 4 px predicted, target 8 px containing them: 4 / 8
    probs[1, :, :] = 0.5  # exactly at the threshold: nothing predicted, IoU 0
    targets = torch.zeros(3, 4, 4)
    targets[:2, :2, :] = 1
    assert mask_iou(probs, targets, 0.5).tolist() == [0.5, 0.0, 0.0]  # the last: both empty


def test_quality_targets_are_the_positive_masks_iou(model):
    # cls_quality: the focal target of each positive cell is its mask's IoU with its ground truth, not 1.
    from torchvision.ops import sigmoid_focal_loss

    b = batch(2)
    crit = model.init_criterion()
    crit.cls_quality = True
    raw = raw_outputs(model(b["img"]))
    gt, cls, assigned = crit.targets(b, (32, 32))
    pos = assigned >= 0
    logits = positive_mask_logits(crit.layout, flatten_levels(raw["kernels"]), raw["mask_feats"], pos)
    cls_logits = flatten_levels(raw["cls"])
    targets = torch.zeros_like(cls_logits)
    for (i, r), probs, k in zip(pos.nonzero().tolist(), logits.sigmoid(), assigned[pos].tolist()):
        pred, truth = probs > crit.mask_thr, gt[k] > 0.5
        targets[i, r, cls[k]] = (pred & truth).sum() / (pred | truth).sum()
    assert 0 < targets.sum() < pos.sum()  # soft targets, neither 0 nor 1
    focal = sigmoid_focal_loss(cls_logits, targets, crit.alpha, crit.gamma, reduction="sum") / (pos.sum() + 1)
    assert crit(raw, b)[1]["cls_loss"].item() == pytest.approx(focal.item() * crit.cls_weight, rel=1e-5)


def test_multi_scale_resizes_ground_truth_masks(model):
    # multi_scale resizes only `img` (here 128 -> 192): masks stay at 128/4, normalised boxes stay valid.
    b = batch(1)
    b["img"] = torch.rand(2, 3, 192, 192)
    masks, cls, assigned = model.init_criterion().targets(b, (48, 48))
    assert masks.shape == (1, 48, 48) and masks.sum() == 18 * 18  # 12 px square at stride 4 -> 18 px
    assert (assigned >= 0).any()
    items = model(b)[1]
    assert items["mask_loss"] > 0 and torch.isfinite(items["cls_loss"])


def test_positive_mask_logits_match_per_cell_convolution():
    g = torch.Generator().manual_seed(0)
    kernels, feats = torch.randn(3, 10, 4, generator=g), torch.randn(3, 4, 5, 6, generator=g)
    pos = torch.rand(3, 10, generator=g) > 0.6
    pos[1] = False  # an image without positives
    got = positive_mask_logits(GridLayout((3, 1), (8, 16)), kernels, feats, pos)
    expected = [torch.einsum("e,ehw->hw", kernels[b, r], feats[b]) for b, r in pos.nonzero().tolist()]
    assert torch.allclose(got, torch.stack(expected), atol=1e-5)


def test_loss_and_decoding_run_in_fp32_under_autocast(model):
    # CPU bfloat16 autocast stands in for CUDA AMP: the head runs in low precision, loss and decoding in fp32.
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, items = model(batch(2))
        model.eval()
        with torch.no_grad(), solo_decoding(model):
            dense, _ = model(torch.rand(1, 3, 128, 128))
        model.train()
    assert loss.dtype == torch.float32 and torch.isfinite(loss) and items["mask_loss"] > 0
    assert dense[2].dtype == torch.bfloat16
    [(probs, conf, cls)] = detections(dense, decode_settings(model), conf=0.0, max_det=50)
    assert probs.dtype == conf.dtype == torch.float32 and torch.isfinite(conf).all()


def test_semantic_targets_are_each_class_union_of_its_masks():
    # 4 masks over 2 images and 3 classes, two of them overlapping (class 2 of image 1), one fractional (coverage).
    masks = (torch.rand(4, 6, 5) > 0.5).float()
    masks[3, 0, 0] = 0.25
    cls, batch_idx = torch.tensor([0, 2, 2, 1]), torch.tensor([0, 1, 1, 1])
    expected = torch.zeros(2, 3, 6, 5)
    for m, c, b in zip(masks, cls, batch_idx):
        expected[b, c] = torch.maximum(expected[b, c], m)
    assert torch.equal(semantic_targets(masks, cls, batch_idx, 2, 3), expected)
    assert expected[1, 2].sum() > max(masks[1].sum(), masks[2].sum())  # the union, not one of them
    assert semantic_targets(masks[:0], cls[:0], batch_idx[:0], 2, 3).shape == (2, 3, 6, 5)


@pytest.mark.parametrize("family", ["yolo11", "yolo26"])
def test_semantic_head_trains_with_its_loss_and_leaves_inference_alone(family):
    # semantic_weight: the head over the fused P3 gets YOLO26's BCE + dice loss against every class's union of masks,
    # computed here by hand; eval outputs do not depend on it, and fuse() removes it.
    cfg = load_model_yaml(f"{family}n-solo.yaml")
    cfg["solo"]["semantic_weight"] = 2.0
    torch.manual_seed(0)
    model = SOLOv2Model(cfg, nc=3, verbose=False)
    model.args = {"overlap_mask": False}
    b = batch(2)
    model.zero_grad()
    loss, items = model.loss(b)
    loss.backward()
    semseg = model.model[-1].proto.semseg
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in semseg.parameters())

    with torch.no_grad():
        logits = model(b["img"])["semantic"]  # (2, 3, 16, 16) at stride 8
    target = torch.zeros(2, 3, 16, 16)
    target[0, 1, 2:10, 2:8] = 1  # the two 48 px squares of image 0 (class 1), input rows [16, 80), cols [16, 64)
    assert torch.equal(target[0, 1], b["masks"].amax(0)[::2, ::2])  # the union at stride 4, every other pixel
    probs = logits.sigmoid()
    bce = F.binary_cross_entropy_with_logits(logits, target)
    dice = 1 - (2 * (probs * target).sum((2, 3)) + 1) / (probs.sum((2, 3)) + target.sum((2, 3)) + 1)
    assert items["sem_loss"].item() == pytest.approx(2.0 * (0.5 * bce + 0.5 * dice.mean()).item(), rel=1e-5)

    model.eval()
    with torch.no_grad(), solo_decoding(model):
        dense, raw = model(b["img"])
        assert "semantic" not in raw and model.loss(b, (dense, raw))[1]["sem_loss"] == 0  # validation's loss
        for p in semseg.parameters():
            p.mul_(-3.0)
        assert all(torch.equal(a, c) for a, c in zip(dense, model(b["img"])[0]))
        model.fuse(verbose=False)
        assert model.model[-1].proto.semseg is None

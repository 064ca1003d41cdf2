"""Masks to the original image size for `save_json`: bitwise Ultralytics' `scale_masks(...).byte()`, or None."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from ultralytics.models.yolo.segment import SegmentationValidator
from ultralytics.utils import ops

from ultra_solo.models.solov2.rescale import bilinear_taps, rescaled_masks
from ultra_solo.models.solov2.val import SOLOValidator


def letterboxed_masks(size: tuple[int, int], shape: tuple[int, int], n: int = 24, seed: int = 0):
    """Blob masks (n, h, w) of a letterboxed input of `size` for an original image of `shape`, one of them empty and
    one full, with Ultralytics' ratio_pad for that letterbox."""
    (h, w), (H, W) = size, shape
    gain = min(h / H, w / W)
    ratio_pad = ((gain, gain), ((w - round(W * gain)) / 2, (h - round(H * gain)) / 2))
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 1, h // 16, w // 16, generator=g) * torch.rand(n, 1, 1, 1, generator=g) * 2
    masks = F.interpolate(coarse, size, mode="bilinear")[:, 0] > 0.5
    masks[0], masks[1] = False, True
    return masks, ratio_pad


@pytest.mark.parametrize(
    "size, shape",
    [((352, 352), (640, 640)), ((352, 352), (1000, 750)), ((320, 256), (1080, 810)), ((96, 128), (375, 500))],
)
def test_rescaled_masks_are_ultralytics_cast_masks(size, shape):
    masks, ratio_pad = letterboxed_masks(size, shape)
    expected = ops.scale_masks(masks[None], shape, ratio_pad=ratio_pad)[0].byte()
    got = rescaled_masks(masks, shape, ratio_pad, chunk=5)
    assert got is not None and got.dtype == torch.uint8 and torch.equal(got, expected)
    assert got[1].all() and not got[0].any()


def test_rescaled_masks_decline_tiny_weights():
    """A 235 x 352 content upsampled to 427 x 640 has weight products below `MIN_WEIGHT`: None (the validator then takes
    Ultralytics' path), as without ratio_pad; masks of the original size are kept as they are."""
    masks, ratio_pad = letterboxed_masks((288, 352), (427, 640))
    assert rescaled_masks(masks, (427, 640), ratio_pad) is None
    assert rescaled_masks(masks, (427, 640), None) is None
    same = rescaled_masks(masks, (288, 352), ratio_pad)
    assert torch.equal(same, masks.to(torch.uint8))


def test_bilinear_taps_are_the_inputs_with_weight():
    """2x: every output reads two inputs weighted 1/4 and 3/4, the first and last one input (clamped at the border)."""
    first, last, smallest = bilinear_taps(4, 8)
    assert first.tolist() == [0, 0, 0, 1, 1, 2, 2, 3]
    assert last.tolist() == [0, 1, 1, 2, 2, 3, 3, 3]
    assert smallest == 0.25


def test_validator_scales_predictions_as_ultralytics(tmp_path):
    masks, ratio_pad = letterboxed_masks((352, 352), (640, 640), n=6)
    predn = {"bboxes": torch.tensor([[10.0, 20.0, 100.0, 200.0]]).repeat(6, 1), "masks": masks}
    predn |= {"conf": torch.linspace(0.9, 0.1, 6), "cls": torch.zeros(6)}
    pbatch = {"imgsz": (352, 352), "ori_shape": (640, 640), "ratio_pad": ratio_pad}
    validator = SOLOValidator(args={"save_json": True}, save_dir=tmp_path)
    ours, theirs = validator.scale_preds(predn, pbatch), SegmentationValidator.scale_preds(validator, predn, pbatch)
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)

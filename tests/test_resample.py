"""Mask resampling: thresholded upsampled masks and their boxes, windowed exactly as upsampling everything."""

from __future__ import annotations

import pytest
import torch
from torchvision.ops import masks_to_boxes

from ultra_solo.models.solov2.resample import (
    edge_boxes,
    filled_lines,
    line_maxima,
    mask_boxes,
    picked_rows,
    upsample_masks,
    upsample_probs,
    upsampled_mask_boxes,
    upsampled_masks_and_boxes,
)


def test_mask_boxes_cover_whole_pixels():
    masks = torch.zeros(2, 10, 12, dtype=torch.bool)
    masks[0, 2:5, 3:9] = True  # rows 2-4, cols 3-8
    boxes = mask_boxes(masks)
    assert boxes.tolist() == [[3.0, 2.0, 9.0, 5.0], [0.0, 0.0, 0.0, 0.0]]


def test_mask_boxes_match_torchvision():
    gen = torch.Generator().manual_seed(0)
    masks = torch.rand(40, 33, 47, generator=gen) > 0.997  # sparse: scattered pixels, some empty masks
    masks[:5] = False
    masks[5, 0, 0] = masks[6, -1, -1] = True  # single pixels in the corners
    filled = masks.flatten(1).any(1)
    expected = torch.zeros(40, 4)
    expected[filled] = masks_to_boxes(masks[filled]) + torch.tensor([0.0, 0.0, 1.0, 1.0])
    assert torch.equal(mask_boxes(masks), expected)


@pytest.mark.parametrize(
    "where, size",
    [
        ((slice(5, 9), slice(3, 6)), (64, 96)),  # inside: only a window is upsampled
        ((slice(0, 3), slice(20, 24)), (64, 96)),  # touching the top and right borders
        ((slice(0, 16), slice(0, 24)), (64, 96)),  # everywhere
        ((slice(5, 9), slice(3, 6)), (48, 72)),  # scale 3: not a power of two, everything is upsampled
        ((slice(5, 9), slice(3, 6)), (50, 70)),  # not a multiple
        ((slice(0, 0), slice(0, 0)), (64, 96)),  # no probability above the threshold
    ],
)
def test_upsampled_masks_and_boxes_equal_upsampling_everything(where, size):
    gen = torch.Generator().manual_seed(0)
    probs = torch.rand(40, 16, 24, generator=gen) * 0.5  # 40 masks > one chunk of 32; all at most the threshold ...
    probs[(slice(None), *where)] += torch.rand(40, 16, 24, generator=gen)[(slice(None), *where)]  # ... but here
    probs[7] *= 0.5  # one mask with no probability above the threshold
    probs[8] = 0.0
    probs[8, 5, 5] = 0.51  # one whose only pixel above the threshold vanishes when upsampled
    expected = upsample_probs(probs, size) > 0.5
    assert torch.equal(upsample_masks(probs, size, 0.5), expected)
    assert torch.equal(upsampled_mask_boxes(probs, size, 0.5), mask_boxes(expected))
    masks, boxes = upsampled_masks_and_boxes(probs, size, 0.5)
    assert torch.equal(masks, expected) and torch.equal(boxes, mask_boxes(expected))
    assert upsample_masks(probs[:0], size, 0.5).shape == (0, *size)
    assert upsampled_mask_boxes(probs[:0], size, 0.5).shape == (0, 4)
    masks, boxes = upsampled_masks_and_boxes(probs[:0], size, 0.5)
    assert masks.shape == (0, *size) and boxes.shape == (0, 4)


@pytest.mark.parametrize("size", [(80, 120), (40, 60)])
def test_masks_and_boxes_with_windows_of_every_size_equal_upsampling_everything(size):
    gen = torch.Generator().manual_seed(1)
    probs = torch.rand(100, 20, 30, generator=gen) * 0.5  # 100 masks: several chunks of windows of different sizes
    for mask, (y, x, h, w) in zip(probs, torch.randint(0, 30, (100, 4), generator=gen).tolist()):
        mask[y % 20 : y % 20 + h % 20 + 1, x : x + w + 1] += 0.6  # a rectangle of its own size, clipped at the borders
    probs[::7] *= 0.5  # and masks with no probability above the threshold
    expected = upsample_probs(probs, size) > 0.5
    assert torch.equal(upsampled_mask_boxes(probs, size, 0.5), mask_boxes(expected))
    masks, boxes = upsampled_masks_and_boxes(probs, size, 0.5)
    assert torch.equal(masks, expected) and torch.equal(boxes, mask_boxes(expected))


def blob_probs(n: int, h: int, w: int, gen: torch.Generator) -> torch.Tensor:
    """Mask probabilities (n, h, w): a noisy disc per mask of random centre, radius and edge sharpness, some touching
    the borders, some tiny, some with no probability above 0.5."""
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    cy, cx = torch.rand(n, 1, 1, generator=gen) * h, torch.rand(n, 1, 1, generator=gen) * w
    radius = torch.rand(n, 1, 1, generator=gen) * h / 2 + 0.5
    inside = (yy - cy) ** 2 + (xx - cx) ** 2 < radius**2
    x = torch.where(inside, 0.45 + 0.5 * torch.rand(n, h, w, generator=gen), 0.5 * torch.rand(n, h, w, generator=gen))
    return torch.sigmoid((x - 0.5) * 20 * torch.rand(n, 1, 1, generator=gen))


@pytest.mark.parametrize("scale", [2, 4, 8])
def test_edge_boxes_equal_upsampling_everything_where_sure(scale):
    gen = torch.Generator().manual_seed(scale)
    for h, w in [(7, 5), (16, 24), (29, 11)]:
        probs = blob_probs(200, h, w, gen)
        expected = mask_boxes(upsample_probs(probs, (scale * h, scale * w)) > 0.5)
        boxes, sure = edge_boxes(probs, scale, 0.5)
        assert torch.equal(boxes[sure], expected[sure])
        assert sure.float().mean() > 0.9  # edges decided off a few rows are the rule, upsampling the exception
        assert torch.equal(upsampled_mask_boxes(probs, (scale * h, scale * w), 0.5), expected)
        assert torch.equal(upsampled_mask_boxes(probs, (scale * h, scale * w), 0.5, probs > 0.5), expected)


@pytest.mark.parametrize("scale", [2, 4, 8])
@pytest.mark.parametrize("w", [1, 2, 9])
def test_line_maxima_are_the_maxima_of_upsampled_rows(scale, w):
    """Three feature rows upsampled: the 2 x scale output rows between the outer two, each with its maximum."""
    rows = torch.rand(5, 2, 3, w, generator=torch.Generator().manual_seed(w))  # (n, 2, 3, w)
    up = upsample_probs(rows.flatten(0, 1), (3 * scale, w * scale))  # output rows scale / 2 + j: rows 0-1, then 1-2
    expected = up[:, scale // 2 : scale // 2 + 2 * scale].amax(2).view(5, 2, 2 * scale)  # (n, 2, 2 scale)
    assert torch.allclose(line_maxima(rows, scale), expected, atol=1e-6)


def test_picked_rows_of_rows_and_columns():
    x = torch.rand(4, 9, 7, generator=torch.Generator().manual_seed(0))
    index = torch.tensor([[0, 8, 3], [1, 1, 2], [8, 7, 6], [4, 0, 5]])
    for probs in (x, x.transpose(1, 2)[:, :7], x[:, ::2]):  # contiguous, columns of a contiguous tensor, strided
        i = index.clamp_max(probs.shape[1] - 1)
        expected = torch.stack([p[r] for p, r in zip(probs, i)])
        assert torch.equal(picked_rows(probs, i), expected)


@pytest.mark.parametrize("h, w", [(7, 5), (16, 24), (80, 88), (255, 8), (256, 8), (3, 1)])
def test_filled_lines_mark_the_rows_and_columns_holding_a_pixel(h, w):
    gen = torch.Generator().manual_seed(h * w)
    masks = torch.rand(30, h, w, generator=gen) > 0.99  # scattered pixels
    masks[0] = False
    masks[1] = True  # every pixel: column counts reach h, the most one byte holds without carry below 256
    masks[2, -1, -1] = masks[3, 0, 0] = True
    rows, cols = filled_lines(masks)
    assert torch.equal(rows.bool(), masks.any(2)) and torch.equal(cols.bool(), masks.any(1))
    rows, cols = filled_lines(masks.transpose(1, 2))  # not contiguous
    assert torch.equal(rows.bool(), masks.any(1)) and torch.equal(cols.bool(), masks.any(2))


def test_edge_boxes_leave_weak_edges_to_upsampling():
    probs = torch.zeros(3, 6, 6)
    probs[0, 2, 2] = 0.51  # above the threshold, but every upsampled value is below it: empty
    probs[1, 1:5, 1:5] = 0.9  # a square: a sure box
    probs[2, 1:5, 1:5] = 0.5 + 1e-6  # a square at the threshold: rounding decides its edges, not sure
    boxes, sure = edge_boxes(probs, 4, 0.5)
    assert sure.tolist() == [False, True, False]
    expected = mask_boxes(upsample_probs(probs, (24, 24)) > 0.5)
    assert torch.equal(boxes[1], expected[1]) and expected[0].tolist() == [0, 0, 0, 0]
    assert torch.equal(upsampled_mask_boxes(probs, (24, 24), 0.5), expected)

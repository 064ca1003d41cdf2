"""The one decoder of Ultralytics' ground-truth mask layouts.

Shape shorthand in this module:
    B: images in the batch
    N: ground-truth instances in the batch
    h, w: mask height and width (input / mask_ratio)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def instance_masks(masks: torch.Tensor, batch_idx: torch.Tensor, overlap: bool) -> torch.Tensor:
    """Return one binary mask per instance from a batch's `masks`, aligned with its `cls` and `bboxes`.

    Args:
        masks (torch.Tensor): (N, h, w) binary masks when `overlap` is False; with `overlap` True one index map per
            image (B, h, w), where value k + 1 marks the image's k-th instance (in `cls` order) and 0 background.
        batch_idx (torch.Tensor): (N,) image index of each instance, grouped by image as the collate function emits.
        overlap (bool): Whether `masks` holds index maps (`overlap_mask=True`).

    Returns:
        (torch.Tensor): (N, h, w) float masks in {0, 1}.
    """
    if not overlap:
        return masks.float()
    b = batch_idx.long()
    first = torch.searchsorted(b, b)  # (N,) position of each image's first instance
    local = torch.arange(len(b), device=b.device) - first  # (N,) index of the instance within its image
    return (masks[b] == (local + 1).view(-1, 1, 1)).float()


def resize_masks(masks: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize binary masks (N, h, w) to `size` bilinearly and threshold at 0.5, as Ultralytics' validator does."""
    if masks.shape[0] == 0:
        return masks.new_zeros((0, *size))
    if tuple(masks.shape[-2:]) == tuple(size):
        return masks
    return (F.interpolate(masks[None].float(), size, mode="bilinear", align_corners=False)[0] > 0.5).float()


def coverage_masks(masks: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The fraction of each pixel of an h x w = `size` grid that binary masks (N, H, W) cover: area averages, (N, h, w).

    A mask made at input resolution and averaged down to the mask stride keeps where its edges lie inside a pixel,
    which a binary mask at that stride rounds to the pixel grid (README "Coverage ground truth").
    """
    if masks.shape[0] == 0:
        return masks.new_zeros((0, *size), dtype=torch.float32)
    return F.interpolate(masks[None].float(), size, mode="area")[0]

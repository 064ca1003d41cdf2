"""SOLOv2 target assignment: which ground-truth instance each grid cell predicts. Vectorised, no_grad, on device.

An instance is assigned to every head level whose scale range holds sqrt(w * h) of its box, measured as a fraction of
the input's longer side (Ultralytics' `imgsz`), so the same instance goes to the same levels at any input size, as it
falls in the same cells of grids that divide the input's longer side into S cells at any size (the shorter side into
S x short / long: `layout.level_grid`). On such a level the cell holding its centre of mass is positive, and so are
the cells within pos_scale * (w / 2, h / 2) of that centre, at most one cell away from it (at most 3 x 3 cells). Where
instances of one image claim the same cell, the one with the smallest mask wins, as in Ultralytics' overlap masks.

Shape shorthand in this module:
    B: images in the batch
    N: ground-truth instances in the batch
    h, w: mask height and width
    S_h, S_w: grid cells of one level along the input's height and width; R: cells over all levels (sum of
        S_h * S_w), level after level, row-major
"""

from __future__ import annotations

import torch


def centre_of_mass(masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Return the centre of mass (cy, cx) of each mask (N, h, w), in mask pixels with pixel centres at +0.5."""
    area = masks.sum((1, 2)).clamp_min(1)  # (N,)
    ys = torch.arange(masks.shape[1], device=masks.device, dtype=masks.dtype) + 0.5
    xs = torch.arange(masks.shape[2], device=masks.device, dtype=masks.dtype) + 0.5
    cy = (masks.sum(2) * ys).sum(1) / area  # (N,)
    cx = (masks.sum(1) * xs).sum(1) / area  # (N,)
    return cy, cx


def cell_span(centre: torch.Tensor, half: torch.Tensor, size: int, grid: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Return the first and last positive cell index (N,) along one axis of an S-cell grid spanning `size` pixels."""
    to_cell = grid / size
    c = (centre * to_cell).floor().clamp(0, grid - 1)
    lo = ((centre - half) * to_cell).floor().clamp_min(0)
    hi = ((centre + half) * to_cell).floor().clamp_max(grid - 1)
    return torch.maximum(lo, c - 1).long(), torch.minimum(hi, c + 1).long()


def level_claims(cy, cx, half_h, half_w, img_shape: tuple[int, int], grid: tuple[int, int]) -> torch.Tensor:
    """Which cells of an S_h x S_w grid each instance claims, (N, S_h * S_w) bool, from centres and half sizes (N,)."""
    top, bottom = cell_span(cy, half_h, img_shape[0], grid[0])
    left, right = cell_span(cx, half_w, img_shape[1], grid[1])
    rows = torch.arange(grid[0], device=cy.device)
    cols = torch.arange(grid[1], device=cy.device)
    rows = (rows >= top[:, None]) & (rows <= bottom[:, None])  # (N, S_h)
    cols = (cols >= left[:, None]) & (cols <= right[:, None])  # (N, S_w)
    return (rows[:, :, None] & cols[:, None, :]).flatten(1)  # (N, S_h * S_w)


@torch.no_grad()
def assign_targets(
    masks: torch.Tensor,
    boxes: torch.Tensor,
    batch_idx: torch.Tensor,
    batch_size: int,
    img_shape: tuple[int, int],
    grids: list[tuple[int, int]],
    scale_ranges: list[list[float]],
    pos_scale: float,
) -> torch.Tensor:
    """Assign ground-truth instances to grid cells.

    Args:
        masks (torch.Tensor): (N, h, w) binary instance masks covering the whole input.
        boxes (torch.Tensor): (N, 4) xyxy boxes in input pixels.
        batch_idx (torch.Tensor): (N,) image index of each instance.
        batch_size (int): B.
        img_shape (tuple[int, int]): Input (height, width) in pixels.
        grids (list[tuple[int, int]]): Cells (S_h, S_w) of each level on this input (`GridLayout.grids`).
        scale_ranges (list[list[float]]): [low, high] of sqrt(w * h) / max(height, width) for each level.
        pos_scale (float): Fraction of the half box size around the centre of mass that is positive.

    Returns:
        (torch.Tensor): (B, R) long, the instance index (into the N instances) each cell predicts, or -1.
    """
    n = masks.shape[0]
    device = masks.device
    if n == 0:
        return torch.full((batch_size, sum(h * w for h, w in grids)), -1, dtype=torch.long, device=device)
    masks = masks.float()
    area = masks.sum((1, 2))  # (N,)
    cy, cx = centre_of_mass(masks)
    cy, cx = cy * (img_shape[0] / masks.shape[1]), cx * (img_shape[1] / masks.shape[2])  # input pixels
    wh = (boxes[:, 2:] - boxes[:, :2]).clamp_min(0)  # (N, 2)
    scale = wh.prod(1).sqrt() / max(img_shape)  # (N,) fraction of the longer input side
    half_w, half_h = (wh * (pos_scale / 2)).unbind(1)
    order = area.argsort(descending=True, stable=True)  # (N,) largest first: a later (smaller) one wins a cell
    priority = torch.empty_like(order).scatter_(0, order, torch.arange(1, n + 1, device=device))  # (N,) 1..N
    b = batch_idx.long()
    targets = []
    for grid, (low, high) in zip(grids, scale_ranges):
        hit = (area > 0) & (scale >= low) & (scale <= high)  # (N,)
        claims = level_claims(cy, cx, half_h, half_w, img_shape, grid) & hit[:, None]  # (N, S_h * S_w)
        key = claims * priority[:, None]  # (N, S_h * S_w), 0 where unclaimed
        best = key.new_zeros(batch_size, key.shape[1]).scatter_reduce_(0, b[:, None].expand_as(key), key, "amax")
        targets.append(torch.where(best > 0, order[(best - 1).clamp_min(0)], -1))  # (B, S_h * S_w)
    return torch.cat(targets, 1)

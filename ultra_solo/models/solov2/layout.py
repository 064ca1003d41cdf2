"""The grid and kernel layout of a SOLO head: where its cells lie and how a cell's kernel makes a mask logit.

One `GridLayout` is the single description of both, used alike by target assignment, the loss, decoding and exports:
the head reports its own (`SOLOHead.layout`), a checkpoint carries it in its head, an export in its metadata.

- **Cells**: level after level, an S x S grid over the whole input, row-major; a cell's centre is ((col + 0.5) / S,
  (row + 0.5) / S) in fractions of the input's width and height, and its level has a stride in input pixels.
- **Kernels**: E weights of a 1x1 dynamic convolution over the E mask-feature channels, then, with `offsets`, two
  weights (a, b) for the cell-offset terms: mask logit at pixel (x, y) = kernel . features(x, y)
  + a * |x - cx| * S + b * |y - cy| * S, the pixel's distance in cells from the kernel's own cell. With negative
  weights a mask fades away from its cell, a box-free locality prior (CondInst gives its mask heads relative coordinates
  for the same reason); zero weights leave SOLOv2's dynamic convolution unchanged.

Shape shorthand in this module:
    B: images; K: cells of one image whose masks are made (candidates, positives)
    R: grid cells over all levels (sum of S**2); S: grid size of one level
    E: mask-feature channels; C: kernel channels (E, or E + 2 with offsets)
    h, w: mask-feature height and width
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch


@dataclass(frozen=True)
class GridLayout:
    """Grid cells and kernel layout of a SOLO head.

    Attributes:
        num_grids (tuple[int, ...]): Grid size S of each level.
        strides (tuple[int, ...]): Stride of each level in input pixels (the smallest mask a level keeps, in pixels
            of the mask features, is its stride).
        offsets (bool): Kernels end with two cell-offset weights (module docstring).
    """

    num_grids: tuple[int, ...]
    strides: tuple[int, ...]
    offsets: bool = False

    def __post_init__(self) -> None:
        """Check that every level has a grid and a stride."""
        if len(self.num_grids) != len(self.strides):
            raise ValueError(f"num_grids {list(self.num_grids)} and strides {list(self.strides)} differ in length")

    @property
    def num_cells(self) -> int:
        """R, the cells of all levels."""
        return sum(s * s for s in self.num_grids)

    def level_sizes(self) -> list[int]:
        """Cells of each level, S**2, in the order of the flattened cells."""
        return [s * s for s in self.num_grids]

    def kernel_channels(self, mask_channels: int) -> int:
        """C, the channels of a kernel over `mask_channels` (E) mask features."""
        return mask_channels + 2 * self.offsets

    def as_dict(self) -> dict:
        """The layout as plain values (an export's metadata, a model YAML's `solo` keys)."""
        return {"num_grids": list(self.num_grids), "strides": list(self.strides), "offsets": self.offsets}

    def cell_geometry(self, device: torch.device | str | None = None) -> torch.Tensor:
        """(R, 3): every cell's centre x and y as fractions of the input width and height, and its level's S.

        Cached per layout and device (callers must not modify it): decoding and the loss read it for every batch.
        """
        return _cell_geometry(self.num_grids, torch.device(device or "cpu"))

    def cell_strides(self, device: torch.device | str | None = None) -> torch.Tensor:
        """(R,): the stride of every cell's level. Cached per layout and device, like `cell_geometry`."""
        return _cell_strides(self.num_grids, self.strides, torch.device(device or "cpu"))

    def mask_logits(self, kernels: torch.Tensor, mask_feats: torch.Tensor, cells: torch.Tensor) -> torch.Tensor:
        """Mask logits of K cells of every image from their kernels and their image's mask features.

        Args:
            kernels (torch.Tensor): (B, K, C) the cells' kernels.
            mask_feats (torch.Tensor): (B, E, h, w) mask features.
            cells (torch.Tensor): (B, K) long, which of the R cells each kernel belongs to (read with `offsets`).

        Returns:
            (torch.Tensor): (B, K, h, w) mask logits.
        """
        e = mask_feats.shape[1]
        logits = kernels[..., :e] @ mask_feats.flatten(2)  # (B, K, h*w)
        logits = logits.view(logits.shape[0], logits.shape[1], mask_feats.shape[2], mask_feats.shape[3])
        if not self.offsets:
            return logits
        return add_cell_offsets(logits, kernels[..., e:], self.cell_geometry(kernels.device)[cells])


def add_cell_offsets(logits: torch.Tensor, weights: torch.Tensor, geometry: torch.Tensor) -> torch.Tensor:
    """Mask logits (..., h, w) plus their cell-offset terms a * |x - cx| * S + b * |y - cy| * S (module docstring).

    The x and y terms are added one after the other: each broadcasts a row or a column, with no (..., h, w) tensor of
    terms in between.

    Args:
        logits (torch.Tensor): (..., h, w) mask logits of the dynamic convolution.
        weights (torch.Tensor): (..., 2) weights (a, b).
        geometry (torch.Tensor): (..., 3) the cells' `GridLayout.cell_geometry`.

    Returns:
        (torch.Tensor): (..., h, w) logits.
    """
    h, w = logits.shape[-2:]
    xs = (torch.arange(w, device=weights.device, dtype=weights.dtype) + 0.5) / w  # (w,)
    ys = (torch.arange(h, device=weights.device, dtype=weights.dtype) + 0.5) / h  # (h,)
    dx = (xs - geometry[..., 0:1]).abs() * geometry[..., 2:3]  # (..., w) distance in cells
    dy = (ys - geometry[..., 1:2]).abs() * geometry[..., 2:3]  # (..., h)
    return logits + (weights[..., 0:1] * dx)[..., None, :] + (weights[..., 1:2] * dy)[..., :, None]


@lru_cache(maxsize=16)
def _cell_geometry(num_grids: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """`GridLayout.cell_geometry`; a normal tensor even if first built in inference mode (the loss reuses it)."""
    levels = []
    with torch.inference_mode(False):
        for s in num_grids:
            centre = (torch.arange(s, dtype=torch.float32, device=device) + 0.5) / s  # (S,)
            levels.append(torch.stack((centre.repeat(s), centre.repeat_interleave(s), centre.new_full((s * s,), s)), 1))
        return torch.cat(levels)


@lru_cache(maxsize=16)
def _cell_strides(num_grids: tuple[int, ...], strides: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """`GridLayout.cell_strides`; a normal tensor even if first built in inference mode."""
    with torch.inference_mode(False):
        counts = torch.tensor([s * s for s in num_grids], device=device)
        return torch.tensor(strides, dtype=torch.float32, device=device).repeat_interleave(counts)

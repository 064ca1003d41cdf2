"""The grid and kernel layout of a SOLO head: where its cells lie and how a cell's kernel makes a mask logit.

One `GridLayout` is the single description of both, used alike by target assignment, the loss, decoding and exports:
the head reports its own (`SOLOHead.layout`), a checkpoint carries it in its head, an export in its metadata.

- **Cells**: level after level, a grid over the whole input, row-major, whose longer side has the level's S cells and
  whose shorter side S x short / long of them (rounded; `level_grid`): S x S on square inputs, and on others cells as
  square in input pixels as in training on square mosaics (a 320 x 256 input gets 40 x 32, 20 x 16, 10 x 8 cells with
  grids 40 / 20 / 10, exactly the neck's outputs), rather than an S x S grid stretched over the rectangle. A cell's
  centre is ((col + 0.5) / S_w, (row + 0.5) / S_h) in fractions of the input's width and height, and its level has a
  stride in input pixels. The input's size is read off the mask features, which every head makes at stride 4.
- **Kernels**: E weights of a 1x1 dynamic convolution over the E mask-feature channels, then, with `offsets`, two
  weights (a, b) for the cell-offset terms: mask logit at pixel (x, y) = kernel . features(x, y)
  + a * |x - cx| * S_w + b * |y - cy| * S_h, the pixel's distance in cells from the kernel's own cell. With negative
  weights a mask fades away from its cell, a box-free locality prior (CondInst gives its mask heads relative coordinates
  for the same reason); zero weights leave SOLOv2's dynamic convolution unchanged.

Shape shorthand in this module:
    B: images; K: cells of one image whose masks are made (candidates, positives)
    R: grid cells over all levels (sum of S_h * S_w); S: grid size of one level (S_h x S_w cells on the input)
    E: mask-feature channels; C: kernel channels (E, or E + 2 with offsets)
    h, w: mask-feature height and width
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch

MASK_STRIDE = 4  # every SOLO head's mask features are at stride 4 of the input


def level_grid(s: int, shape: tuple[int, int] | None) -> tuple[int, int]:
    """(S_h, S_w): the cells of a level with grid S on an input of `shape` (height, width); (S, S) if None or square."""
    if shape is None:
        return s, s
    h, w = int(shape[0]), int(shape[1])  # traced graphs (exports) keep the grid of the size they were traced at
    return max(1, round(s * h / max(h, w))), max(1, round(s * w / max(h, w)))


def input_shape(mask_feats: torch.Tensor) -> tuple[int, int]:
    """The input (height, width) of mask features (B, E, h, w)."""
    return mask_feats.shape[-2] * MASK_STRIDE, mask_feats.shape[-1] * MASK_STRIDE


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
        """R, the cells of all levels on a square input."""
        return sum(self.level_sizes())

    def grids(self, shape: tuple[int, int] | None = None) -> list[tuple[int, int]]:
        """(S_h, S_w) of every level on an input of `shape` (height, width; None: square)."""
        return [level_grid(s, shape) for s in self.num_grids]

    def level_sizes(self, shape: tuple[int, int] | None = None) -> list[int]:
        """Cells of each level, S_h * S_w, in the order of the flattened cells."""
        return [h * w for h, w in self.grids(shape)]

    def kernel_channels(self, mask_channels: int) -> int:
        """C, the channels of a kernel over `mask_channels` (E) mask features."""
        return mask_channels + 2 * self.offsets

    def as_dict(self) -> dict:
        """The layout as plain values (an export's metadata, a model YAML's `solo` keys)."""
        return {"num_grids": list(self.num_grids), "strides": list(self.strides), "offsets": self.offsets}

    def cell_geometry(
        self, device: torch.device | str | None = None, shape: tuple[int, int] | None = None
    ) -> torch.Tensor:
        """(R, 4): every cell's centre x and y as fractions of the input width and height, and its level's S_w, S_h.

        For an input of `shape` (None: square). Cached per layout, device and shape (callers must not modify it):
        decoding and the loss read it for every batch.
        """
        return _cell_geometry(tuple(self.grids(shape)), torch.device(device or "cpu"))

    def cell_strides(
        self, device: torch.device | str | None = None, shape: tuple[int, int] | None = None
    ) -> torch.Tensor:
        """(R,): the stride of every cell's level on an input of `shape`. Cached like `cell_geometry`."""
        return _cell_strides(tuple(self.level_sizes(shape)), self.strides, torch.device(device or "cpu"))

    def grid_input(self, shape: tuple[int, int], num_cells: int) -> tuple[int, int]:
        """The input shape whose grids give `num_cells` cells: `shape` itself, or for the outputs of a graph traced on
        a square input and run on a non-square one (a dynamic export keeps its traced grids), the square of its side.

        Raises:
            ValueError: When neither gives `num_cells`.
        """
        square = (max(shape), max(shape))
        for candidate in (shape, square):
            if sum(self.level_sizes(candidate)) == num_cells:
                return candidate
        raise ValueError(f"outputs with {num_cells} grid cells do not fit grids {list(self.num_grids)} at {shape}")

    def mask_logits(
        self,
        kernels: torch.Tensor,
        mask_feats: torch.Tensor,
        cells: torch.Tensor,
        shape: tuple[int, int] | None = None,
    ) -> torch.Tensor:
        """Mask logits of K cells of every image from their kernels and their image's mask features.

        Args:
            kernels (torch.Tensor): (B, K, C) the cells' kernels.
            mask_feats (torch.Tensor): (B, E, h, w) mask features.
            cells (torch.Tensor): (B, K) long, which of the R cells each kernel belongs to (read with `offsets`).
            shape (tuple[int, int], optional): The input shape the cells' grids are of, default the mask features'
                input (`input_shape`; `grid_input` for outputs of exported graphs).

        Returns:
            (torch.Tensor): (B, K, h, w) mask logits.
        """
        e = mask_feats.shape[1]
        logits = kernels[..., :e] @ mask_feats.flatten(2)  # (B, K, h*w)
        logits = logits.view(logits.shape[0], logits.shape[1], mask_feats.shape[2], mask_feats.shape[3])
        if not self.offsets:
            return logits
        geometry = self.cell_geometry(kernels.device, shape or input_shape(mask_feats))
        return add_cell_offsets(logits, kernels[..., e:], geometry[cells], inplace=eager_inference(logits))


def eager_inference(x: torch.Tensor) -> bool:
    """Whether `x` may be overwritten in place: no autograd records it and no graph is being traced or compiled."""
    return not (x.requires_grad or torch.jit.is_tracing() or torch.compiler.is_compiling())


def add_cell_offsets(
    logits: torch.Tensor, weights: torch.Tensor, geometry: torch.Tensor, inplace: bool = False
) -> torch.Tensor:
    """Mask logits (..., h, w) plus their cell-offset terms a * |x - cx| * S_w + b * |y - cy| * S_h (module docstring).

    The x and y terms are added one after the other: each broadcasts a row or a column, with no (..., h, w) tensor of
    terms in between.

    Args:
        logits (torch.Tensor): (..., h, w) mask logits of the dynamic convolution.
        weights (torch.Tensor): (..., 2) weights (a, b).
        geometry (torch.Tensor): (..., 4) the cells' `GridLayout.cell_geometry`.
        inplace (bool): Add the terms into `logits` itself (inference: two passes over it and no new (..., h, w)
            tensors, the same values).

    Returns:
        (torch.Tensor): (..., h, w) logits.
    """
    h, w = logits.shape[-2:]
    xs = (torch.arange(w, device=weights.device, dtype=weights.dtype) + 0.5) / w  # (w,)
    ys = (torch.arange(h, device=weights.device, dtype=weights.dtype) + 0.5) / h  # (h,)
    dx = (xs - geometry[..., 0:1]).abs() * geometry[..., 2:3]  # (..., w) distance in cells
    dy = (ys - geometry[..., 1:2]).abs() * geometry[..., 3:4]  # (..., h)
    x_terms, y_terms = (weights[..., 0:1] * dx)[..., None, :], (weights[..., 1:2] * dy)[..., :, None]
    if inplace:
        return logits.add_(x_terms).add_(y_terms)
    return logits + x_terms + y_terms


@lru_cache(maxsize=64)
def _cell_geometry(grids: tuple[tuple[int, int], ...], device: torch.device) -> torch.Tensor:
    """`GridLayout.cell_geometry`; a normal tensor even if first built in inference mode (the loss reuses it)."""
    levels = []
    with torch.inference_mode(False):
        for gh, gw in grids:
            cx = (torch.arange(gw, dtype=torch.float32, device=device) + 0.5) / gw  # (S_w,)
            cy = (torch.arange(gh, dtype=torch.float32, device=device) + 0.5) / gh  # (S_h,)
            size = cx.new_tensor([gw, gh]).expand(gh * gw, 2)  # (S_h * S_w, 2)
            levels.append(torch.cat((torch.stack((cx.repeat(gh), cy.repeat_interleave(gw)), 1), size), 1))
        return torch.cat(levels)


@lru_cache(maxsize=64)
def _cell_strides(level_sizes: tuple[int, ...], strides: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """`GridLayout.cell_strides`; a normal tensor even if first built in inference mode."""
    with torch.inference_mode(False):
        counts = torch.tensor(level_sizes, device=device)
        return torch.tensor(strides, dtype=torch.float32, device=device).repeat_interleave(counts)

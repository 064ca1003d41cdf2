"""A SOLO head for a YOLO PAN trunk: SOLOv2's branches on the neck's own P3-P5, no second pyramid.

The neck already fuses top-down and bottom-up (`yolo11-seg.yaml` rows 16, 19, 22), so each grid level reads one neck
output, with its own towers as YOLO's `Detect` has per level (the neck's widths differ per level). The unified mask
features are made the way YOLO26's `Proto26` makes its prototypes: P4 and P5 projected to P3's width, upsampled and
added to P3, then a 3x3 conv (with CoordConv channels), a 2x upsample to stride 4, a 3x3 conv and a 1x1 conv to E
channels.

Shape shorthand in this module:
    B: images in the batch
    C: channels (per level)
    H, W: input height and width (multiples of 32)
    S: grid size of one level
    E: dynamic kernel size = mask-feature channels
    nc: number of classes
"""

from __future__ import annotations

import weakref

import torch
import torch.nn.functional as F
from torch import nn
from ultralytics.nn.modules import Conv, DWConv

from .head import SOLOHead, coord_features, normal_init, prior_bias, to_grid, with_coords
from .layout import GridLayout
from .settings import SOLOSettings

_COORD_TERMS = weakref.WeakKeyDictionary()  # Conv -> (key, feature weights, coordinate term): see `conv_with_coords`


def conv_with_coords(layer: Conv, x: torch.Tensor) -> torch.Tensor:
    """`layer(with_coords(x))` for a Conv over x's C channels and 2 CoordConv channels, (B, C, h, w) -> (B, C2, h, w).

    In inference mode (Ultralytics' predictor and validator; not traced, not FLOPs counting) the convolution is split: x
    convolved with the first C input channels' weights plus the CoordConv channels' share, a constant map per input size
    computed once per size and weights (the two extra channels cost more than their share on CPU: `benchmarks/ops.py`).
    Same values up to float rounding. Weights made in inference mode carry no version: they are not updated.
    """
    if layer.training or not torch.is_inference_mode_enabled() or torch.jit.is_tracing():
        return layer(with_coords(x))
    conv, c = layer.conv, x.shape[1]
    w = conv.weight
    key = (x.shape[2:], x.dtype, x.device, w.data_ptr(), 0 if w.is_inference() else w._version)
    cached = _COORD_TERMS.get(layer)
    if cached is None or cached[0] != key:
        coords = coord_features(x[:1])  # (1, 2, h, w)
        term = F.conv2d(coords, w[:, c:], None, conv.stride, conv.padding, conv.dilation)  # (1, C2, h, w)
        cached = _COORD_TERMS[layer] = (key, w[:, :c].contiguous(), term)
    y = F.conv2d(x, cached[1], conv.bias, conv.stride, conv.padding, conv.dilation) + cached[2]
    return layer.act(y if not hasattr(layer, "bn") else layer.bn(y))


def depthwise_separable(c1: int, c2: int) -> nn.Sequential:
    """A 3x3 depthwise Conv-BN-SiLU then a 1x1 Conv-BN-SiLU, c1 -> c2: one step of YOLO11's `Detect` class branch."""
    return nn.Sequential(DWConv(c1, c1, 3), Conv(c1, c2, 1))


class GridBranch(nn.Module):
    """Category and dynamic-kernel towers of one level, Conv-BN-SiLU stacks with CoordConv on the kernel tower.

    The kernel tower stacks 3x3 convolutions; the category tower too, or depthwise-separable steps as YOLO11's `Detect`
    class branch does (`depthwise_cls`), about a ninth of their cost.
    """

    def __init__(self, c_in: int, c_head: int, stacked: int, nc: int, kernel_size: int, depthwise_cls: bool = False):
        """Build both towers of one level.

        Args:
            c_in (int): Channels of the level's neck output.
            c_head (int): Tower channels.
            stacked (int): Convolutions (or depthwise-separable steps) per tower.
            nc (int): Number of classes.
            kernel_size (int): Dynamic kernel size E.
            depthwise_cls (bool): Depthwise-separable category tower.
        """
        super().__init__()
        step = depthwise_separable if depthwise_cls else lambda c1, c2: Conv(c1, c2, 3)
        self.cls_tower = nn.Sequential(*(step(c_in if i == 0 else c_head, c_head) for i in range(stacked)))
        self.kernel_tower = nn.Sequential(*(Conv(c_in + 2 if i == 0 else c_head, c_head, 3) for i in range(stacked)))
        self.cls_pred = nn.Conv2d(c_head, nc, 1)
        self.kernel_pred = nn.Conv2d(c_head, kernel_size, 1)
        normal_init(self.cls_pred)
        normal_init(self.kernel_pred)
        prior_bias(self.cls_pred)

    def forward(self, x: torch.Tensor, grid: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Map one level (B, C, h, w) to category logits (B, nc, S, S) and kernels (B, E, S, S)."""
        x = to_grid(x, grid)
        kernels = self.kernel_tower[1:](conv_with_coords(self.kernel_tower[0], x))
        return self.cls_pred(self.cls_tower(x)), self.kernel_pred(kernels)


class PANMaskBranch(nn.Module):
    """Unified mask features from P3-P5 at stride 4, E channels."""

    def __init__(self, in_channels: list[int], c_mask: int, kernel_size: int):
        """Build the branch.

        Args:
            in_channels (list[int]): Channels of P3, P4, P5.
            c_mask (int): Channels of the branch's convolutions.
            kernel_size (int): Output channels E.
        """
        super().__init__()
        c3 = in_channels[0]
        self.lateral = nn.ModuleList(Conv(c, c3, 1) for c in in_channels[1:])
        self.fuse = Conv(c3 + 2, c_mask, 3)
        self.refine = Conv(c_mask, c_mask, 3)
        self.out = Conv(c_mask, kernel_size, 1)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        """Fuse P3..P5 (B, C, H/2**(3+i), W/2**(3+i)) into mask features (B, E, H/4, W/4)."""
        x = feats[0]
        for i, (lateral, f) in enumerate(zip(self.lateral, feats[1:])):
            x = x + F.interpolate(lateral(f), scale_factor=2 ** (i + 1), mode="nearest")  # (B, C3, H/8, W/8)
        x = F.interpolate(conv_with_coords(self.fuse, x), scale_factor=2, mode="bilinear", align_corners=False)
        return self.out(self.refine(x))  # (B, E, H/4, W/4)


class SOLOPANHead(SOLOHead):
    """SOLO on a YOLO PAN trunk: one grid level per neck output (P3, P4, P5), mask features from the same outputs."""

    in_strides = (8, 16, 32)  # the neck's P3, P4, P5
    strides = (8, 16, 32)  # one grid level per neck output

    def __init__(
        self,
        in_channels: list[int],
        nc: int,
        c_head: int,
        stacked: int,
        c_mask: int,
        kernel_size: int,
        num_grids: list[int],
        offsets: bool = False,
        depthwise_cls: bool = False,
    ):
        """Build the per-level grid branches and the mask-feature branch.

        Args:
            in_channels (list[int]): Channels of the neck outputs P3, P4, P5.
            nc (int): Number of classes.
            c_head (int): Tower channels of every level.
            stacked (int): Convolutions per tower.
            c_mask (int): Mask-branch channels.
            kernel_size (int): Dynamic kernel size E = mask-feature channels.
            num_grids (list[int]): Grid size S of each level (P3, P4, P5).
            offsets (bool): Kernels get two more weights, for the cell-offset terms (`layout.GridLayout`).
            depthwise_cls (bool): Depthwise-separable category towers (`GridBranch`).
        """
        super().__init__()
        if len(num_grids) != 3:
            raise ValueError(f"SOLOPANHead has one grid per neck level (P3, P4, P5): num_grids {num_grids}")
        self.nc, self.kernel_size = nc, kernel_size
        self.num_grids = list(num_grids)
        kernel_out = GridLayout(tuple(num_grids), self.strides, offsets).kernel_channels(kernel_size)
        self.grid_branches = nn.ModuleList(
            GridBranch(c, c_head, stacked, nc, kernel_out, depthwise_cls) for c in in_channels
        )
        self.mask_branch = PANMaskBranch(in_channels, c_mask, kernel_size)

    @classmethod
    def settings_kwargs(cls, settings: SOLOSettings) -> dict:
        """The constructor arguments this head takes from a model's `solo` settings."""
        return {"num_grids": settings.num_grids, "offsets": settings.offsets, "depthwise_cls": settings.depthwise_cls}

    @property
    def offsets(self) -> bool:
        """Whether the kernels end with the two cell-offset weights, read off the kernel convolutions' widths."""
        return self.grid_branches[0].kernel_pred.out_channels == self.kernel_size + 2

    def forward(self, feats: list[torch.Tensor]):
        """Run the head on the neck's P3, P4, P5; see `head.py` for the outputs of each mode."""
        mask_feats = self.mask_branch(feats)  # (B, E, H/4, W/4)
        cls_logits, kernels = zip(*(b(x, s) for b, x, s in zip(self.grid_branches, feats, self.num_grids)))
        return self.outputs(list(cls_logits), list(kernels), mask_feats)

"""SOLO heads: what every SOLO head shares (outputs per mode, CoordConv, point NMS) and the SOLOv2 head on FPN P2-P6.

Outputs of every SOLO head, by mode (the contract the loss, the postprocess and the exporter rely on):
    training: the raw outputs, a dict `{"cls": [(B, nc, S, S)] per level, "kernels": [(B, E, S, S)] per level,
        "mask_feats": (B, E, H/4, W/4)}`, plus "semantic": (B, nc, H/8, W/8) where the head has a semantic branch;
    eval: `(dense, raw)`, dense = (scores (B, R, nc) after sigmoid and 2x2 point NMS, kernels (B, R, E), mask features
        (B, E, H/4, W/4));
    export (`head.export` set to an `export.ExportSpec` on the exporter's copy of the model): three plain tensors, the
        dense outputs, or for an end2end spec the decoded scores (B, D), classes (B, D) and mask probabilities
        (B, D, H/4, W/4).

Every head reports its grid and kernel layout (`layout`): its grids, its levels' strides and what its kernels hold.

Shape shorthand in this module:
    B: images in the batch
    C: channels
    H, W: input height and width (multiples of 32)
    S: grid size of one head level, S_h x S_w cells on the input (`layout.level_grid`); R: cells over all levels
    E: dynamic kernel size = mask-feature channels
    nc: number of classes
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from .layout import GridLayout

if TYPE_CHECKING:
    from .export import ExportSpec
    from .settings import SOLOSettings


def raw_outputs(preds) -> dict:
    """The raw outputs dict from a head's training output or its eval `(dense, raw)` pair (tuple or list)."""
    return preds if isinstance(preds, dict) else preds[1]


def conv_gn_relu(c1: int, c2: int, k: int = 3) -> nn.Sequential:
    """Return a bias-free k x k convolution followed by GroupNorm(32) and ReLU, as in MMDetection's ConvModule."""
    return nn.Sequential(nn.Conv2d(c1, c2, k, padding=k // 2, bias=False), nn.GroupNorm(32, c2), nn.ReLU(inplace=True))


def normal_init(module: nn.Module, std: float = 0.01) -> None:
    """Initialise every convolution of a module from N(0, std) with zero bias, as MMDetection's SOLOv2 head does."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.weight, std=std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def prior_bias(conv: nn.Conv2d, prior: float = 0.01) -> None:
    """Set a classifier's bias so that its initial sigmoid output is `prior` (focal loss initialisation)."""
    nn.init.constant_(conv.bias, -math.log((1 - prior) / prior))


def coord_features(x: torch.Tensor) -> torch.Tensor:
    """Return CoordConv channels for a feature map: x then y, each running from -1 to 1, shape (B, 2, h, w).

    Built from `arange` and tensor arithmetic (not `linspace`/`meshgrid`), which exports to ONNX with dynamic sizes and
    survives onnxslim's constant folding unchanged.
    """
    b, _, h, w = x.shape
    xs = torch.arange(w, device=x.device, dtype=x.dtype)  # (w,)
    ys = torch.arange(h, device=x.device, dtype=x.dtype)  # (h,)
    xs, ys = xs * 2 / xs[-1:].clamp_min(1) - 1, ys * 2 / ys[-1:].clamp_min(1) - 1
    return torch.stack((xs.view(1, w).expand(h, w), ys.view(h, 1).expand(h, w)))[None].expand(b, -1, -1, -1)


def with_coords(x: torch.Tensor) -> torch.Tensor:
    """Concatenate CoordConv channels to a feature map, (B, C, h, w) -> (B, C + 2, h, w)."""
    return torch.cat((x, coord_features(x)), 1)


def to_grid(x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Resize a feature map (B, C, h, w) to its level's grid (B, C, S_h, S_w), bilinearly; unchanged at equal size.

    Traced graphs (exports) always resize: a graph traced at one size may run at others (with the traced grid).
    """
    if not torch.jit.is_tracing() and tuple(x.shape[-2:]) == tuple(grid):
        return x
    return F.interpolate(x, size=tuple(grid), mode="bilinear", align_corners=False)


def point_nms(scores: torch.Tensor) -> torch.Tensor:
    """Keep grid scores that are the maximum of their 2x2 neighbourhood, zero the rest; (B, nc, S, S) -> same."""
    peak = F.max_pool2d(scores, 2, stride=1, padding=1)[..., :-1, :-1]
    return scores * (peak == scores)


def flatten_levels(maps: list[torch.Tensor]) -> torch.Tensor:
    """Concatenate per-level grid maps [(B, C, S, S)] into one (B, R, C) tensor, level after level, row-major."""
    return torch.cat([m.flatten(2).transpose(1, 2) for m in maps], 1)


class SOLOHead(nn.Module):
    """What every SOLO head shares: the outputs per mode (module docstring) from its per-level maps, and its layout.

    Attributes:
        export (ExportSpec | None): None in training and eval; set on the exporter's copy of the model only.
        in_strides (tuple[int, ...]): The strides of the inputs the head reads, checked when the model is built.
        strides (tuple[int, ...]): The strides of the head's grid levels.
        num_grids (list[int]): Grid size S of each level.
        kernel_size (int): Mask-feature channels E.
        offsets (bool): Kernels end with two cell-offset weights (`layout.GridLayout`).
    """

    export: ExportSpec | None = None
    in_strides: tuple[int, ...] = ()
    strides: tuple[int, ...] = ()
    offsets: bool = False

    @classmethod
    def settings_kwargs(cls, settings: SOLOSettings) -> dict:
        """The constructor arguments this head takes from a model's `solo` settings (here only the grids).

        Raises:
            ValueError: For a setting this head has no part for.
        """
        if unsupported := [k for k in ("offsets", "semantic_weight") if getattr(settings, k)]:
            raise ValueError(f"{cls.__name__} takes no 'solo' key(s) {unsupported}")
        return {"num_grids": settings.num_grids}

    @property
    def layout(self) -> GridLayout:
        """The head's grid and kernel layout, which targets, the loss, decoding and exports all read."""
        return GridLayout(tuple(self.num_grids), tuple(self.strides), bool(self.offsets))

    def grids(self, first: torch.Tensor) -> list[tuple[int, int]]:
        """(S_h, S_w) of every level for the input the head's first feature map (B, C, h, w) was made from."""
        stride = self.in_strides[0]
        return self.layout.grids((first.shape[-2] * stride, first.shape[-1] * stride))

    def outputs(
        self,
        cls_logits: list[torch.Tensor],
        kernels: list[torch.Tensor],
        mask_feats: torch.Tensor,
        semantic: torch.Tensor | None = None,
    ):
        """Return the outputs of the current mode from per-level logits and kernels and the mask features; training
        outputs also hold the auxiliary semantic logits (B, nc, H/8, W/8) of a head with them (`semantic_weight`)."""
        raw = {"cls": cls_logits, "kernels": kernels, "mask_feats": mask_feats}
        if self.training:
            return raw if semantic is None else {**raw, "semantic": semantic}
        scores = flatten_levels([point_nms(c.sigmoid()) for c in cls_logits])  # (B, R, nc)
        dense = (scores, flatten_levels(kernels), mask_feats)
        return (dense, raw) if self.export is None else self.export.outputs(dense)


class MaskFeatureBranch(nn.Module):
    """Unified mask-feature branch: fuses P2-P5 at stride 4 (CoordConv on P5) into E channels.

    Level i (stride 4 * 2**i) goes through i conv + 2x-upsample steps (one conv for P2); the sum of all levels passes a
    1x1 conv with GroupNorm and ReLU.
    """

    def __init__(self, c_in: int, c_mid: int, c_out: int, num_levels: int = 4):
        """Build the per-level towers.

        Args:
            c_in (int): FPN channels.
            c_mid (int): Channels of the per-level towers.
            c_out (int): Output channels E (the dynamic kernel size).
            num_levels (int): Number of FPN levels fused, starting at P2.
        """
        super().__init__()
        self.levels = nn.ModuleList()
        for i in range(num_levels):
            first = c_in + 2 if i == num_levels - 1 and i > 0 else c_in  # CoordConv on the deepest level
            layers = [conv_gn_relu(first, c_mid)]
            for j in range(i):
                if j:
                    layers.append(conv_gn_relu(c_mid, c_mid))
                layers.append(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False))
            self.levels.append(nn.Sequential(*layers))
        self.fuse = conv_gn_relu(c_mid, c_out, k=1)
        normal_init(self)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        """Fuse P2..P5 (B, C, H/4/2**i, W/4/2**i) into mask features (B, E, H/4, W/4)."""
        last = len(self.levels) - 1
        out = self.levels[0](feats[0])
        for i in range(1, len(self.levels)):
            out = out + self.levels[i](with_coords(feats[i]) if i == last else feats[i])
        return self.fuse(out)


class InstanceBranch(nn.Module):
    """Category and dynamic-kernel branches, shared across head levels.

    A level's features (with CoordConv channels) are resized to its S x S grid; the kernel tower sees the coordinates,
    the category tower does not.
    """

    def __init__(self, c_in: int, c_head: int, stacked: int, nc: int, kernel_size: int, prior: float = 0.01):
        """Build both towers.

        Args:
            c_in (int): FPN channels.
            c_head (int): Tower channels.
            stacked (int): Convolutions per tower.
            nc (int): Number of classes.
            kernel_size (int): Dynamic kernel size E (1x1 kernels over E mask-feature channels).
            prior (float): Initial foreground probability of the category logits.
        """
        super().__init__()
        self.cls_tower = nn.Sequential(*(conv_gn_relu(c_in if i == 0 else c_head, c_head) for i in range(stacked)))
        self.kernel_tower = nn.Sequential(
            *(conv_gn_relu(c_in + 2 if i == 0 else c_head, c_head) for i in range(stacked))
        )
        self.cls_pred = nn.Conv2d(c_head, nc, 3, padding=1)
        self.kernel_pred = nn.Conv2d(c_head, kernel_size, 3, padding=1)
        normal_init(self)
        prior_bias(self.cls_pred, prior)

    def forward(self, x: torch.Tensor, grid: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Map one level (B, C, h, w) to category logits (B, nc, S_h, S_w) and kernels (B, E, S_h, S_w)."""
        x = to_grid(with_coords(x), grid)
        return self.cls_pred(self.cls_tower(x[:, :-2])), self.kernel_pred(self.kernel_tower(x))


class SOLOv2Head(SOLOHead):
    """SOLOv2 as in the paper and MMDetection: FPN P2-P6 on backbone features C2-C5, one instance branch shared by
    five levels (P2 downsampled to stride 8, P3, P4, P5, P6 upsampled to stride 32), mask features fused at stride 4.
    """

    in_strides = (4, 8, 16, 32)  # C2-C5
    strides = (8, 8, 16, 32, 32)  # P2 downsampled, P3, P4, P5, P6 upsampled

    def __init__(
        self,
        in_channels: list[int],
        nc: int,
        c_fpn: int,
        c_head: int,
        stacked: int,
        c_mask_mid: int,
        c_mask_out: int,
        num_grids: list[int],
    ):
        """Build FPN, mask-feature branch and instance branch.

        Args:
            in_channels (list[int]): Channels of the C2-C5 backbone features (strides 4, 8, 16, 32).
            nc (int): Number of classes.
            c_fpn (int): FPN channels.
            c_head (int): Instance-branch tower channels.
            stacked (int): Convolutions per instance tower.
            c_mask_mid (int): Mask-feature tower channels.
            c_mask_out (int): Mask-feature channels E, which is also the dynamic kernel size.
            num_grids (list[int]): Grid size S of each of the five head levels.
        """
        super().__init__()
        self.nc, self.kernel_size = nc, c_mask_out
        self.num_grids = list(num_grids)
        self.fpn = FeaturePyramidNetwork(in_channels, c_fpn, extra_blocks=LastLevelMaxPool())
        self.mask_branch = MaskFeatureBranch(c_fpn, c_mask_mid, c_mask_out)
        self.instance_branch = InstanceBranch(c_fpn, c_head, stacked, nc, c_mask_out)

    def forward(self, feats: list[torch.Tensor]):
        """Run the head on backbone features C2..C5; see the module docstring for the outputs."""
        p = list(self.fpn(OrderedDict((str(i), f) for i, f in enumerate(feats))).values())  # P2..P6
        mask_feats = self.mask_branch(p[:4])  # (B, E, H/4, W/4)
        levels = [
            F.interpolate(p[0], scale_factor=0.5, mode="bilinear", align_corners=False),  # P2 -> stride 8
            *p[1:4],
            F.interpolate(p[4], size=p[3].shape[-2:], mode="bilinear", align_corners=False),  # P6 -> stride 32
        ]
        cls_logits, kernels = zip(*(self.instance_branch(x, g) for x, g in zip(levels, self.grids(feats[0]))))
        return self.outputs(list(cls_logits), list(kernels), mask_feats)

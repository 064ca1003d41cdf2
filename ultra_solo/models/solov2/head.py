"""SOLOv2 head: FPN P2-P6, unified mask-feature branch and the category / dynamic-kernel instance branch.

Shape shorthand in this module:
    B: images in the batch
    C: channels
    H, W: input height and width (multiples of 32)
    S: grid size of one head level; R: grid cells over all levels (sum of S**2)
    E: dynamic kernel size = mask-feature channels
    nc: number of classes
"""

from __future__ import annotations

import math
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from .postprocess import DecodeSettings, decode_static


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
        nn.init.constant_(self.cls_pred.bias, -math.log((1 - prior) / prior))

    def forward(self, x: torch.Tensor, grid: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Map one level (B, C, h, w) to category logits (B, nc, S, S) and kernels (B, E, S, S)."""
        x = F.interpolate(with_coords(x), size=(grid, grid), mode="bilinear", align_corners=False)
        return self.cls_pred(self.cls_tower(x[:, :-2])), self.kernel_pred(self.kernel_tower(x))


def point_nms(scores: torch.Tensor) -> torch.Tensor:
    """Keep grid scores that are the maximum of their 2x2 neighbourhood, zero the rest; (B, nc, S, S) -> same."""
    peak = F.max_pool2d(scores, 2, stride=1, padding=1)[..., :-1, :-1]
    return scores * (peak == scores)


def flatten_levels(maps: list[torch.Tensor]) -> torch.Tensor:
    """Concatenate per-level grid maps [(B, C, S, S)] into one (B, R, C) tensor, level after level, row-major."""
    return torch.cat([m.flatten(2).transpose(1, 2) for m in maps], 1)


def raw_outputs(preds) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor]:
    """Return the head's raw outputs from its training output or its eval `(dense, raw)` pair (tuple or list)."""
    return preds[1] if len(preds) == 2 else preds


class SOLOv2Head(nn.Module):
    """FPN P2-P6 and the SOLOv2 head.

    Outputs depend on the mode, following Ultralytics' `Segment` head:
        training: raw = (cls logits [(B, nc, S, S)] per level, kernels [(B, E, S, S)] per level, mask features
            (B, E, H/4, W/4));
        eval: (dense, raw) with dense = (scores (B, R, nc) after sigmoid and 2x2 point NMS, kernels (B, R, E),
            mask features (B, E, H/4, W/4));
        tracing / ONNX export: dense only, three plain tensors; with `end2end` set (settings, conf, max_det), the
            decoded detections of `decode_static` instead.
    """

    end2end: tuple[DecodeSettings, float, int] | None = None  # set only while an end2end export traces the head

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
        self.nc = nc
        self.num_grids = list(num_grids)
        self.fpn = FeaturePyramidNetwork(in_channels, c_fpn, extra_blocks=LastLevelMaxPool())
        self.mask_branch = MaskFeatureBranch(c_fpn, c_mask_mid, c_mask_out)
        self.instance_branch = InstanceBranch(c_fpn, c_head, stacked, nc, c_mask_out)

    def forward(self, feats: list[torch.Tensor]):
        """Run the head on backbone features C2..C5; see the class docstring for the outputs."""
        p = list(self.fpn(OrderedDict((str(i), f) for i, f in enumerate(feats))).values())  # P2..P6
        mask_feats = self.mask_branch(p[:4])  # (B, E, H/4, W/4)
        levels = [
            F.interpolate(p[0], scale_factor=0.5, mode="bilinear", align_corners=False),  # P2 -> stride 8
            *p[1:4],
            F.interpolate(p[4], size=p[3].shape[-2:], mode="bilinear", align_corners=False),  # P6 -> stride 32
        ]
        cls_logits, kernels = zip(*(self.instance_branch(x, s) for x, s in zip(levels, self.num_grids)))
        raw = (list(cls_logits), list(kernels), mask_feats)
        if self.training:
            return raw
        scores = flatten_levels([point_nms(c.sigmoid()) for c in cls_logits])  # (B, R, nc)
        dense = (scores, flatten_levels(list(kernels)), mask_feats)
        if torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
            return decode_static(*dense, *self.end2end) if self.end2end else dense
        return dense, raw

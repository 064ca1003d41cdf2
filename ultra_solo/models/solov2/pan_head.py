"""A SOLO head for a YOLO PAN trunk that is YOLO-seg's own `Segment` head without its box branch.

YOLO-seg's mask of an anchor is sigmoid(coefficients . prototypes) cropped by its box; SOLO's mask of a grid cell is
sigmoid(kernel . mask features), uncropped. So the head here is built with `Segment`'s (`Segment26`'s) modules, names
and widths, derived from the neck's channels and nc as they derive theirs, and takes a YOLO-seg checkpoint's head as it
is:
- category branch `cv3[i]` = YOLO's class branch (two depthwise-separable steps to c3 = max(C_P3, min(nc, 100)), then
  a 1x1 to nc);
- kernel branch `cv4[i]` = YOLO's mask-coefficient branch (3x3, 3x3 to c4 = max(C_P3 // 4, E), 1x1 to E);
- mask features `proto` = YOLO's `Proto` (YOLO11) or `Proto26` (YOLO26) at stride 4.
What SOLO adds starts at zero contribution, so a model that took a YOLO checkpoint computes YOLO's class logits and
pre-crop mask logits before any training (`transfer.py`): the CoordConv input channels of `cv4[i][0]` and of the mask
branch's first 3x3 (zero weights), the two cell-offset weights of every kernel (zero rows of `cv4[i][2]`) and, on
YOLO11, the P4/P5 laterals into the mask features (YOLO26's `Proto26` has its own; here their BatchNorm scale and shift
start at 0, so they output SiLU(0) = 0) and yolo11-solo's skip from the trunk's stride-4 row (`SOLOPANHeadP2`, silent
the same way).
With `semantic_weight`, the mask branch also keeps YOLO26's auxiliary semantic head (`Proto26.semseg` on the fused
P3, and the same on YOLO11's): trained with its own loss, unused in inference and removed by `fuse()`, so it changes no
output and a YOLO26-seg checkpoint's transfers to it.

Shape shorthand in this module:
    B: images in the batch
    C: channels (per level)
    H, W: input height and width (multiples of 32)
    S: grid size of one level
    E: dynamic kernel size = mask-feature channels (YOLO's nm)
    nc: number of classes
"""

from __future__ import annotations

import weakref

import torch
import torch.nn.functional as F
from torch import nn
from ultralytics.nn.modules import Conv, DWConv, Proto
from ultralytics.nn.modules.block import Proto26
from ultralytics.utils.ops import make_divisible
from ultralytics.utils.torch_utils import initialize_weights

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


def coord_conv(c1: int, c2: int, k: int = 3) -> Conv:
    """A Conv over c1 feature channels and 2 CoordConv channels whose coordinate weights start at zero."""
    layer = Conv(c1 + 2, c2, k)
    nn.init.zeros_(layer.conv.weight[:, c1:].data)
    return layer


def silent(layer: Conv) -> Conv:
    """Zero a Conv-BN-SiLU's BatchNorm scale and shift, so it outputs SiLU(0) = 0 until it learns otherwise."""
    nn.init.zeros_(layer.bn.weight)
    nn.init.zeros_(layer.bn.bias)
    return layer


def add_levels(feats: list[torch.Tensor], refine: nn.ModuleList) -> torch.Tensor:
    """P3 plus P4, P5 projected to P3's width and upsampled (nearest), as `Proto26` fuses them; (B, C3, H/8, W/8)."""
    x = feats[0]
    for i, (lateral, f) in enumerate(zip(refine, feats[1:])):
        x = x + F.interpolate(lateral(f), scale_factor=2 ** (i + 1), mode="nearest")
    return x


def semantic_head(c_in: int, c_: int, nc: int) -> nn.Sequential:
    """`Proto26`'s auxiliary semantic head: two 3x3 Convs to c_, then a 1x1 to nc logits, on the fused P3."""
    return nn.Sequential(Conv(c_in, c_, 3), Conv(c_, c_, 3), nn.Conv2d(c_, nc, 1))


def with_semantic(proto: nn.Module, mask_feats: torch.Tensor, p3: torch.Tensor):
    """The mask branch's output: mask features, and while training with a semantic head, its logits of `p3` too
    (checkpoints of 0.3.4 and before pickled a `SOLOProto` without the attribute)."""
    if proto.training and getattr(proto, "semseg", None) is not None:
        return mask_feats, proto.semseg(p3)
    return mask_feats


def category_branch(c_in: int, c3: int, nc: int) -> nn.Sequential:
    """YOLO11's `Detect` class branch of one level: two depthwise-separable steps to c3, then a 1x1 to nc logits."""
    branch = nn.Sequential(
        nn.Sequential(DWConv(c_in, c_in, 3), Conv(c_in, c3, 1)),
        nn.Sequential(DWConv(c3, c3, 3), Conv(c3, c3, 1)),
        nn.Conv2d(c3, nc, 1),
    )
    normal_init(branch[-1])
    prior_bias(branch[-1])
    return branch


def kernel_branch(
    c_in: int, c4: int, nm: int, kernel_out: int, offset_bias: tuple[float, float] = (0.0, 0.0)
) -> nn.Sequential:
    """`Segment`'s mask-coefficient branch of one level, with CoordConv input: 3x3, 3x3 to c4, 1x1 to the kernels.

    The 1x1's outputs beyond the E = nm dynamic-convolution weights (the cell-offset weights) start at `offset_bias`,
    whatever the features: zero weights, that bias.
    """
    branch = nn.Sequential(coord_conv(c_in, c4), Conv(c4, c4, 3), nn.Conv2d(c4, kernel_out, 1))
    normal_init(branch[-1])
    nn.init.zeros_(branch[-1].weight.data[nm:])
    if kernel_out > nm:
        branch[-1].bias.data[nm:] = torch.tensor(offset_bias)
    return branch


class SOLOProto(Proto):
    """YOLO11's `Proto` on P3, with P4/P5 laterals added to P3 first and CoordConv channels into `cv1`, both silent,
    and optionally `Proto26`'s auxiliary semantic head on that fused P3 (training only)."""

    def __init__(self, ch: list[int], c_: int, c2: int, nc: int = 1, semantic: bool = False):
        """Build `Proto(C_P3, c_, c2)`'s layers and the laterals.

        Args:
            ch (list[int]): Channels of P3, P4, P5.
            c_ (int): Intermediate channels (YOLO's npr).
            c2 (int): Mask-feature channels E (YOLO's nm).
            nc (int): Classes of the semantic head.
            semantic (bool): Build the semantic head (`semantic_weight`).
        """
        super().__init__(ch[0], c_, c2)
        self.cv1 = coord_conv(ch[0], c_)
        self.feat_refine = nn.ModuleList(silent(Conv(c, ch[0], 1)) for c in ch[1:])
        self.semseg = semantic_head(ch[0], c_, nc) if semantic else None

    def forward(self, x: list[torch.Tensor]):
        """Mask features (B, E, H/4, W/4) from P3..P5 (B, C, H/2**(3+i), W/2**(3+i)); while training with a semantic
        head, also its logits (B, nc, H/8, W/8)."""
        p3 = add_levels(x, self.feat_refine)  # (B, C3, H/8, W/8)
        return with_semantic(self, self.cv3(self.cv2(self.upsample(conv_with_coords(self.cv1, p3)))), p3)

    def fuse(self) -> None:
        """Remove the semantic head for inference, as `Proto26.fuse` does."""
        self.semseg = None


class SOLOProtoP2(SOLOProto):
    """`SOLOProto` with the trunk's stride-4 features added after its 2x upsample through a 1x1, silent at the start."""

    def __init__(self, ch: list[int], c_: int, c2: int, nc: int = 1, semantic: bool = False):
        """Build `SOLOProto(ch[1:], c_, c2, nc, semantic)` and the skip from the stride-4 row.

        Args:
            ch (list[int]): Channels of the trunk's stride-4 row, then P3, P4, P5.
            c_ (int): Intermediate channels (YOLO's npr).
            c2 (int): Mask-feature channels E (YOLO's nm).
            nc (int): Classes of the semantic head.
            semantic (bool): Build the semantic head (`semantic_weight`).
        """
        super().__init__(ch[1:], c_, c2, nc, semantic)
        self.skip = silent(Conv(ch[0], c_, 1))

    def forward(self, x: list[torch.Tensor]):
        """Mask features (B, E, H/4, W/4) from the stride-4 row (B, C2, H/4, W/4) and P3..P5 (and, training with a
        semantic head, its logits)."""
        p3 = add_levels(x[1:], self.feat_refine)  # (B, C3, H/8, W/8)
        up = self.upsample(conv_with_coords(self.cv1, p3))  # (B, c_, H/4, W/4)
        return with_semantic(self, self.cv3(self.cv2(up + self.skip(x[0]))), p3)


class SOLOProto26(Proto26):
    """YOLO26's `Proto26` with CoordConv channels into `feat_fuse` (silent); its semantic head only with
    `semantic_weight` (else None: nothing trains it)."""

    def __init__(self, ch: list[int], c_: int, c2: int, nc: int = 1, semantic: bool = False):
        """Build `Proto26(ch, c_, c2, nc)`'s layers, the semantic head only if `semantic`.

        Args:
            ch (list[int]): Channels of P3, P4, P5.
            c_ (int): Intermediate channels (YOLO's npr).
            c2 (int): Mask-feature channels E (YOLO's nm).
            nc (int): Classes of the semantic head.
            semantic (bool): Keep the semantic head (`semantic_weight`).
        """
        super().__init__(ch, c_, c2, nc=nc if semantic else 1)  # nc 1: the same initialisation as before it existed
        self.feat_fuse = coord_conv(ch[0], c_)
        if not semantic:
            self.semseg = None

    def forward(self, x: list[torch.Tensor]):
        """Mask features (B, E, H/4, W/4) from P3..P5 (B, C, H/2**(3+i), W/2**(3+i)); while training with a semantic
        head, also its logits (B, nc, H/8, W/8), as `Proto26` returns them."""
        p3 = add_levels(x, self.feat_refine)  # (B, C3, H/8, W/8)
        return with_semantic(self, Proto.forward(self, conv_with_coords(self.feat_fuse, p3)), p3)


class SOLOPANHead(SOLOHead):
    """SOLO on YOLO11's PAN trunk: one grid level per neck output (P3, P4, P5), `Segment`'s modules (module docstring).

    Attributes:
        cv3 (nn.ModuleList): Category branch of each level.
        cv4 (nn.ModuleList): Kernel branch of each level.
        proto (nn.Module): Mask-feature branch.
    """

    in_strides = (8, 16, 32)  # the neck's P3, P4, P5
    strides = (8, 16, 32)  # one grid level per neck output
    proto_class = SOLOProto

    def __init__(
        self,
        in_channels: list[int],
        nc: int,
        nm: int,
        npr: int,
        num_grids: list[int],
        offsets: bool = False,
        offset_bias: tuple[float, float] = (0.0, 0.0),
        semantic: bool = False,
    ):
        """Build the per-level branches and the mask-feature branch at `Segment`'s widths.

        Args:
            in_channels (list[int]): Channels of the inputs: the neck outputs P3, P4, P5 (`SOLOPANHeadP2`: the
                trunk's stride-4 row first).
            nc (int): Number of classes.
            nm (int): Dynamic kernel size E = mask-feature channels (YOLO's number of masks).
            npr (int): Mask-branch channels (YOLO's number of prototypes, already scaled: `scale_args`).
            num_grids (list[int]): Grid size S of each level (P3, P4, P5).
            offsets (bool): Kernels get two more weights, for the cell-offset terms (`layout.GridLayout`).
            offset_bias (tuple[float, float]): Their initial value (`SOLOSettings.offset_bias`).
            semantic (bool): The mask branch gets the auxiliary semantic head (`SOLOSettings.semantic_weight`).
        """
        super().__init__()
        if len(num_grids) != 3:
            raise ValueError(f"{type(self).__name__} has one grid per neck level (P3, P4, P5): num_grids {num_grids}")
        self.nc, self.kernel_size, self.num_grids = nc, nm, list(num_grids)
        kernel_out = GridLayout(tuple(num_grids), self.strides, offsets).kernel_channels(nm)
        levels = in_channels[-3:]  # the grid levels read the neck's P3, P4, P5; the mask features read every input
        c3, c4 = max(levels[0], min(nc, 100)), max(levels[0] // 4, nm)  # as YOLO's Detect and Segment
        self.cv3 = nn.ModuleList(category_branch(c, c3, nc) for c in levels)
        self.cv4 = nn.ModuleList(kernel_branch(c, c4, nm, kernel_out, offset_bias) for c in levels)
        self.proto = self.proto_class(in_channels, npr, nm, nc, semantic)

    @staticmethod
    def scale_args(args: list, width: float, max_channels: int) -> list:
        """Scale the YAML row's npr by the model's width as Ultralytics' `parse_model` scales `Segment`'s."""
        nc, nm, npr = args
        return [nc, nm, make_divisible(min(npr, max_channels) * width, 8)]

    @classmethod
    def settings_kwargs(cls, settings: SOLOSettings) -> dict:
        """The constructor arguments this head takes from a model's `solo` settings."""
        return {
            "num_grids": settings.num_grids,
            "offsets": settings.offsets,
            "offset_bias": settings.offset_bias,
            "semantic": settings.semantic_weight > 0,
        }

    @property
    def offsets(self) -> bool:
        """Whether the kernels end with the two cell-offset weights, read off the kernel convolutions' widths."""
        return self.cv4[0][-1].out_channels == self.kernel_size + 2

    def fuse(self) -> None:
        """Remove the mask branch's training-only semantic head for inference, as `Segment.fuse` does with `Proto26`'s
        (a checkpoint's `SOLOProto` of 0.3.4 and before has no `fuse`)."""
        if hasattr(self.proto, "fuse"):
            self.proto.fuse()

    def widened_params(self) -> dict[str, int]:
        """The parameters SOLO widened beyond `Segment`'s by two entries -> the widened dimension (`transfer.py`).

        CoordConv's input channels of every kernel branch and of the mask branch's first 3x3 (dim 1); with offsets,
        the two cell-offset outputs of every kernel branch's 1x1 (dim 0).
        """
        first = "proto.cv1" if isinstance(self.proto, SOLOProto) else "proto.feat_fuse"
        params = {f"{first}.conv.weight": 1, **{f"cv4.{i}.0.conv.weight": 1 for i in range(len(self.cv4))}}
        if self.offsets:
            params.update({f"cv4.{i}.2.{p}": 0 for i in range(len(self.cv4)) for p in ("weight", "bias")})
        return params

    def rebuild_category(self, c3: int) -> None:
        """Rebuild every level's category branch at hidden width c3 (a checkpoint's, when nc differs from it)."""
        device, dtype = self.cv3[0][-1].weight.device, self.cv3[0][-1].weight.dtype
        self.cv3 = nn.ModuleList(category_branch(b[0][0].conv.in_channels, c3, self.nc) for b in self.cv3)
        initialize_weights(self.cv3)  # Ultralytics' BatchNorm eps and momentum, as the model's build gave the others
        self.cv3.to(device, dtype).train(self.training)

    def level(self, i: int, x: torch.Tensor, grid: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Category logits (B, nc, S_h, S_w) and kernels (B, E(+2), S_h, S_w) of level i from its neck output."""
        x = to_grid(x, grid)  # (B, C, S_h, S_w): the neck output itself at the grid's size (imgsz 320)
        cv4 = self.cv4[i]
        return self.cv3[i](x), cv4[2](cv4[1](conv_with_coords(cv4[0], x)))

    def forward(self, feats: list[torch.Tensor]):
        """Run the head on its inputs (the neck's P3, P4, P5 last); see `head.py` for the outputs of each mode."""
        mask_feats = self.proto(feats)  # (B, E, H/4, W/4), or with the semantic logits (B, nc, H/8, W/8) too
        mask_feats, semantic = mask_feats if isinstance(mask_feats, tuple) else (mask_feats, None)
        grids = self.grids(feats[0])
        cls_logits, kernels = zip(*(self.level(i, x, g) for i, (x, g) in enumerate(zip(feats[-3:], grids))))
        return self.outputs(list(cls_logits), list(kernels), mask_feats, semantic)

    def __setstate__(self, state: dict) -> None:
        """Refuse a checkpoint of the head as it was before it mirrored `Segment` (its branches had other names)."""
        if "grid_branches" in state.get("_modules", {}):
            raise TypeError(
                "this checkpoint's SOLOPANHead predates ultra-solo 0.2, whose head mirrors YOLO-seg's Segment; "
                "train it again with this version, or load it with ultra-solo 0.1"
            )
        super().__setstate__(state)


class SOLOPANHead26(SOLOPANHead):
    """SOLO on YOLO26's PAN trunk: `Segment26`'s one-to-many branches and its `Proto26` (module docstring)."""

    proto_class = SOLOProto26


class SOLOPANHeadP2(SOLOPANHead):
    """`SOLOPANHead` whose mask features also read the trunk's stride-4 row (YOLO11n: row 2, C3k2, 64 channels) through
    a silent 1x1 (`SOLOProtoP2`): detail SOLOv2's own mask branch takes from FPN P2. A YOLO-seg checkpoint transfers as
    into `SOLOPANHead`, the skip starting at zero contribution; the grid levels are the neck's P3, P4, P5."""

    in_strides = (4, 8, 16, 32)  # the trunk's stride-4 row, then the neck's P3, P4, P5
    proto_class = SOLOProtoP2

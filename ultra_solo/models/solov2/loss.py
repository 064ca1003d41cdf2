"""SOLOv2 loss: sigmoid focal loss on every grid cell + dice loss on the masks of positive cells.

Shape shorthand in this module:
    B: images in the batch
    N: ground-truth instances in the batch
    R: grid cells over all levels; P: positive cells in the batch
    E: mask-feature channels; C: kernel channels (E, or E + 2 with cell offsets: `layout.GridLayout`)
    h, w: mask-feature height and width (input / 4)
    h', w': height and width of the masks the loss compares (input / loss_stride)
    nc: number of classes
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torchvision.ops import sigmoid_focal_loss
from ultralytics.utils import LOGGER, ops
from ultralytics.utils.loss import BCEDiceLoss

from ultra_solo.utils.masks import coverage_masks, instance_masks, resize_masks

from .head import flatten_levels, raw_outputs
from .layout import GridLayout
from .settings import SOLO_ARG_DEFAULTS
from .targets import assign_targets


def dice_loss(probs: torch.Tensor, targets: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """Return 1 - dice per mask, (P, h, w) probabilities and targets in [0, 1] -> (P,); dice = 2ab / (a^2 + b^2).

    The loss is 0 only where probs = targets, binary targets or covered fractions (`coverage_targets`) alike.
    """
    probs, targets = probs.flatten(1), targets.flatten(1)
    inter = (probs * targets).sum(1)
    return 1 - 2 * inter / ((probs * probs).sum(1) + (targets * targets).sum(1) + 2 * eps)


def mask_probs(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Mask probabilities (P, h', w') from logits (P, h, w), upsampled bilinearly as decoding upsamples them."""
    probs = logits.sigmoid()
    if tuple(probs.shape[1:]) == tuple(size) or not len(probs):
        return probs
    return F.interpolate(probs[None], size, mode="bilinear", align_corners=False)[0]


def mask_iou(probs: torch.Tensor, targets: torch.Tensor, thr: float) -> torch.Tensor:
    """IoU (P,) of masks `probs > thr` (P, h, w) with targets (P, h, w) above 0.5; 0 where both are empty."""
    pred, targets = probs.flatten(1) > thr, targets.flatten(1) > 0.5
    inter = (pred & targets).sum(1)
    return inter / ((pred | targets).sum(1)).clamp_min(1)


def pixel_bce(probs: torch.Tensor, targets: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Mean binary cross-entropy per mask over its pixels, (P, h', w') probabilities and targets in [0, 1] -> (P,)."""
    return F.binary_cross_entropy(probs.clamp(eps, 1 - eps), targets, reduction="none").flatten(1).mean(1)


def boundary_band(masks: torch.Tensor, radius: int) -> torch.Tensor:
    """The boundary band of masks (P, h, w) in [0, 1]: 1 where the (2 radius + 1)^2 window (inside the image) holds
    both covered (> 0) and uncovered (< 1) area, i.e. within `radius` pixels (chessboard distance) of the mask's edge;
    (P, h, w). Binary masks: the window holds both mask and background pixels."""
    k = 2 * radius + 1
    dilated = F.max_pool2d(masks[:, None], k, stride=1, padding=radius)[:, 0]
    eroded = -F.max_pool2d(-masks[:, None], k, stride=1, padding=radius)[:, 0]
    return ((dilated > 0) & (eroded < 1)).to(masks.dtype)


def band_radius(size: tuple[int, int], fraction: float = 0.02) -> int:
    """Boundary IoU's band width, `fraction` of the diagonal of an h x w mask, in whole pixels (at least 1)."""
    return max(1, round(fraction * (size[0] ** 2 + size[1] ** 2) ** 0.5))


def band_dice_loss(probs: torch.Tensor, targets: torch.Tensor, band: torch.Tensor) -> torch.Tensor:
    """Dice loss (P,) over the ground truth's boundary band (P, h, w) only (`boundary_band`): the pixels where a mask's
    edge is decided, which the dice over the whole mask hardly weighs."""
    return dice_loss(probs * band, targets * band)


def semantic_targets(masks: torch.Tensor, cls: torch.Tensor, batch_idx: torch.Tensor, b: int, nc: int) -> torch.Tensor:
    """Per image and class, the union of the ground-truth masks (N, h, w) in [0, 1] of classes `cls` (N,) in images
    `batch_idx` (N,): each pixel's largest value, (B, nc, h, w)."""
    flat = masks.flatten(1)  # (N, h * w)
    index = (batch_idx.long() * nc + cls.long())[:, None].expand_as(flat)  # (N, h * w) row of its image and class
    targets = flat.new_zeros((b * nc, flat.shape[1])).scatter_reduce_(0, index, flat, "amax")
    return targets.view(b, nc, *masks.shape[1:])


def positive_mask_logits(
    layout: GridLayout, kernels: torch.Tensor, mask_feats: torch.Tensor, pos: torch.Tensor
) -> torch.Tensor:
    """Mask logits of the positive cells, made as decoding makes a candidate's (`GridLayout.mask_logits`).

    Args:
        layout (GridLayout): The head's grid and kernel layout.
        kernels (torch.Tensor): (B, R, C) kernels of all cells.
        mask_feats (torch.Tensor): (B, E, h, w) mask features.
        pos (torch.Tensor): (B, R) bool, the positive cells.

    Returns:
        (torch.Tensor): (P, h, w) mask logits, in the order of `pos.nonzero()`.
    """
    b, r = pos.nonzero(as_tuple=True)  # (P,), grouped by image
    counts = pos.sum(1)  # (B,)
    slot = torch.arange(len(b), device=b.device) - (counts.cumsum(0) - counts)[b]  # (P,) index within its image
    padded = kernels.new_zeros(pos.shape[0], int(counts.max()), kernels.shape[2])  # (B, Pmax, C)
    padded[b, slot] = kernels[b, r]
    cells = r.new_zeros(padded.shape[:2])  # (B, Pmax)
    cells[b, slot] = r
    return layout.mask_logits(padded, mask_feats, cells)[b, slot]  # (P, h, w)


class SOLOv2Loss:
    """SOLOv2 criterion: focal loss (normalised by positives + 1) and dice loss, with weights from the model YAML."""

    def __init__(self, model):
        """Read the SOLO settings and the head's layout from the model and the mask layout from `overlap_mask`.

        A model without training arguments (e.g. loaded from a checkpoint) takes SOLO's default (`SOLO_ARG_DEFAULTS`).
        """
        settings = model.settings
        self.layout = model.layout
        self.scale_ranges = settings.scale_ranges
        self.pos_scale = settings.pos_scale
        self.cls_weight = settings.cls_weight
        self.mask_weight = settings.mask_weight
        self.bce_weight = settings.bce_weight
        self.band_weight = settings.band_weight
        self.loss_stride = settings.loss_stride
        self.coverage_targets = settings.coverage_targets
        self.semantic_weight = settings.semantic_weight
        self.semantic_loss = BCEDiceLoss(weight_bce=0.5, weight_dice=0.5)  # YOLO26's semantic loss
        self.alpha = settings.focal_alpha
        self.gamma = settings.focal_gamma
        self.cls_quality = settings.cls_quality
        self.mask_thr = settings.mask_thr
        args = getattr(model, "args", {})
        args = args if isinstance(args, dict) else vars(args)
        self.overlap = args.get("overlap_mask", SOLO_ARG_DEFAULTS["overlap_mask"])
        self.skipped = 0  # batches whose loss was non-finite, counted by the model's `loss` guard

    def update(self) -> None:
        """Called by the trainer after each epoch: report and reset the count of skipped non-finite batches."""
        if self.skipped:
            LOGGER.warning(f"skipped {self.skipped} training batch(es) with a non-finite loss this epoch")
        self.skipped = 0

    def targets(self, batch: dict, mask_size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return GT masks (N, h', w') at `mask_size` (binary, or covered fractions with `coverage_targets`), classes
        (N,) and the cell assignment (B, R)."""
        img_h, img_w = batch["img"].shape[2:]
        masks = instance_masks(batch["masks"], batch["batch_idx"], self.overlap)
        resize = coverage_masks if self.coverage_targets else resize_masks
        masks = resize(masks, mask_size)  # multi_scale or mask_ratio != 4 change the GT size
        boxes = ops.xywh2xyxy(batch["bboxes"]) * batch["bboxes"].new_tensor([img_w, img_h, img_w, img_h])
        assigned = assign_targets(
            masks,
            boxes,
            batch["batch_idx"],
            batch["img"].shape[0],
            (img_h, img_w),
            self.layout.grids((img_h, img_w)),
            self.scale_ranges,
            self.pos_scale,
        )
        return masks, batch["cls"].view(-1).long(), assigned

    def __call__(self, preds: Any, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Compute the loss.

        Args:
            preds: Head output (training raw outputs, or the eval `(dense, raw)` pair).
            batch (dict): Ultralytics segment batch (`img`, `masks`, `cls`, `bboxes`, `batch_idx`).

        Returns:
            (tuple): Total loss times batch size, and the detached weighted `cls_loss` and `mask_loss` (and
                `sem_loss` with `semantic_weight`).
        """
        raw = raw_outputs(preds)
        cls_maps, kernel_maps, mask_feats = raw["cls"], raw["kernels"], raw["mask_feats"]
        with torch.autocast(mask_feats.device.type, enabled=False):  # fp32: dice sums and focal terms underflow in fp16
            cls_logits = flatten_levels(cls_maps).float()  # (B, R, nc)
            kernels = flatten_levels(kernel_maps).float()  # (B, R, C)
            mask_feats = mask_feats.float()  # (B, E, h, w)
            loss_size = tuple(s // self.loss_stride for s in batch["img"].shape[2:])  # (h', w')
            gt_masks, gt_cls, assigned = self.targets(batch, loss_size)
            pos = assigned >= 0  # (B, R)
            inst = assigned[pos]  # (P,)

            quality = 1.0  # focal target of the positive cells
            if len(inst):
                logits = positive_mask_logits(self.layout, kernels, mask_feats, pos)  # (P, h, w)
                probs, targets = mask_probs(logits, loss_size), gt_masks[inst]  # (P, h', w')
                mask_loss = dice_loss(probs, targets).mean() * self.mask_weight
                if self.bce_weight:
                    mask_loss = mask_loss + pixel_bce(probs, targets).mean() * self.bce_weight
                if self.band_weight:
                    bands = boundary_band(gt_masks, band_radius(loss_size))[inst]  # once per instance, (P, h', w')
                    mask_loss = mask_loss + band_dice_loss(probs, targets, bands).mean() * self.band_weight
                if self.cls_quality:
                    quality = mask_iou(probs.detach(), targets, self.mask_thr)  # (P,)
            else:  # keep every parameter in the graph (DDP) with a zero mask loss
                mask_loss = (kernels.sum() + mask_feats.sum()) * 0.0

            cls_targets = torch.zeros_like(cls_logits)
            cls_targets[pos, gt_cls[inst]] = quality
            cls_loss = sigmoid_focal_loss(cls_logits, cls_targets, self.alpha, self.gamma, reduction="sum")
            cls_loss = cls_loss / (len(inst) + 1) * self.cls_weight
            items = {"cls_loss": cls_loss, "mask_loss": mask_loss}
            if self.semantic_weight:
                items["sem_loss"] = self.semantic(raw.get("semantic"), gt_masks, gt_cls, batch["batch_idx"])
        batch_size = mask_feats.shape[0]
        return sum(items.values()) * batch_size, {k: v.detach() for k, v in items.items()}

    def semantic(
        self, logits: torch.Tensor | None, masks: torch.Tensor, cls: torch.Tensor, batch_idx: torch.Tensor
    ) -> torch.Tensor:
        """The weighted auxiliary semantic loss of the head's semantic logits (B, nc, H/8, W/8) against every class's
        union of the ground-truth masks (N, h', w'), resized by `BCEDiceLoss` (nearest); 0 where the outputs hold no
        semantic logits (eval outputs: validation during training, as YOLO26's)."""
        if logits is None:
            return masks.new_zeros(())
        logits = logits.float()
        targets = semantic_targets(masks, cls, batch_idx, *logits.shape[:2])  # (B, nc, h', w')
        return self.semantic_loss(logits, targets) * self.semantic_weight

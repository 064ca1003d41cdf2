"""SOLOv2 inference from the head's dense outputs: pure functions shared by the validator and the predictor.

Per image: score threshold (Ultralytics' `conf`) -> top `nms_pre` (cell, class) candidates -> dynamic 1x1 convolution
-> mask threshold -> drop masks no larger than their level's stride -> maskness rescoring -> Matrix NMS -> scores of at
least max(conf, filter_thr) -> `max_det`. The 2x2 point NMS runs in the head, so exported graphs include it.

Shape shorthand in this module:
    R: grid cells over all levels; nc: number of classes; E: kernel size = mask-feature channels
    K: candidates of one image; n: detections of one image
    h, w: mask-feature height and width (input / 4); H, W: input height and width
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torchvision.ops import masks_to_boxes


def dense_outputs(preds) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Return (scores, kernels, mask features) from the eval `(dense, raw)` pair or an export's three outputs."""
    return preds[0] if len(preds) == 2 else preds


@dataclass(frozen=True)
class DecodeSettings:
    """SOLOv2 inference constants from the model YAML's `solo` block."""

    num_grids: tuple[int, ...]
    strides: tuple[int, ...]
    nms_pre: int = 500
    mask_thr: float = 0.5
    kernel: str = "gaussian"
    sigma: float = 2.0
    filter_thr: float = 0.05
    end2end: bool = False  # outputs are an end2end export's decoded detections, not dense outputs

    @classmethod
    def from_solo(cls, solo: dict) -> DecodeSettings:
        """Build the settings from a `solo` block, ignoring its training-only keys."""
        keys = ("nms_pre", "mask_thr", "kernel", "sigma", "filter_thr")
        kwargs = {k: solo[k] for k in keys if k in solo}
        return cls(tuple(solo["num_grids"]), tuple(solo["strides"]), end2end="end2end" in solo, **kwargs)

    def cell_strides(self, device: torch.device | None = None) -> torch.Tensor:
        """Return the stride of each grid cell's level, (R,)."""
        counts = torch.tensor([s * s for s in self.num_grids], device=device)
        return torch.tensor(self.strides, dtype=torch.float32, device=device).repeat_interleave(counts)


def matrix_nms(masks: torch.Tensor, labels: torch.Tensor, areas: torch.Tensor, kernel="gaussian", sigma=2.0):
    """Matrix NMS: the score decay of each mask from its overlap with higher-scored masks of the same class.

    The decay of mask j is the minimum over higher-scored masks k of f(iou_kj) / f(c_k), where c_k is the largest IoU
    of mask k with any mask scored above it (its own suppression), and f(x) = exp(-sigma * x^2) (gaussian) or
    1 - x (linear). Uses no `triu`, so it exports to ONNX Runtime. Leading batch dimensions (...) are allowed.

    Args:
        masks (torch.Tensor): (..., n, M) binary masks, flattened, sorted by descending score.
        labels (torch.Tensor): (..., n) class of each mask.
        areas (torch.Tensor): (..., n) pixel count of each mask.
        kernel (str): 'gaussian' or 'linear'.
        sigma (float): Gaussian kernel width.

    Returns:
        (torch.Tensor): (..., n) decay coefficients in (0, 1].
    """
    n = masks.shape[-2]
    if n == 0:
        return areas.new_ones(areas.shape, dtype=torch.float32)
    masks, areas = masks.float(), areas.float()
    inter = masks @ masks.transpose(-1, -2)  # (..., n, n)
    iou = inter / (areas[..., :, None] + areas[..., None, :] - inter).clamp_min(1)
    order = torch.arange(n, device=masks.device)
    same = labels[..., :, None] == labels[..., None, :]
    iou = iou * ((order[:, None] < order[None, :]) & same)  # (..., n, n): only k above j, same class
    own = iou.max(-2).values  # (..., n) c_k
    if kernel == "gaussian":
        decay = torch.exp(-sigma * (iou.square() - own.square()[..., :, None]))
    elif kernel == "linear":
        decay = (1 - iou) / (1 - own[..., :, None]).clamp_min(1e-6)
    else:
        raise ValueError(f"Matrix NMS kernel must be 'gaussian' or 'linear', not '{kernel}'")
    return decay.min(-2).values


def decode_image(
    scores: torch.Tensor,
    kernels: torch.Tensor,
    mask_feats: torch.Tensor,
    settings: DecodeSettings,
    conf: float,
    max_det: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Turn one image's dense outputs into detections.

    Args:
        scores (torch.Tensor): (R, nc) category scores after point NMS.
        kernels (torch.Tensor): (R, E) dynamic kernels.
        mask_feats (torch.Tensor): (E, h, w) mask features.
        settings (DecodeSettings): SOLO inference constants.
        conf (float): Score threshold for candidates and for final detections.
        max_det (int): Maximum detections.

    Returns:
        (tuple): Mask probabilities (n, h, w), scores (n,) in descending order and classes (n,) long.
    """
    scores, kernels, mask_feats = scores.float(), kernels.float(), mask_feats.float()
    cell, cls = (scores > conf).nonzero(as_tuple=True)  # (K,)
    score = scores[cell, cls]
    if len(score) > settings.nms_pre:
        top = score.topk(settings.nms_pre).indices
        cell, cls, score = cell[top], cls[top], score[top]
    probs = (kernels[cell] @ mask_feats.flatten(1)).sigmoid().view(len(cell), *mask_feats.shape[1:])
    masks = probs > settings.mask_thr
    area = masks.sum((1, 2)).float()  # (K,)
    keep = area > settings.cell_strides(scores.device)[cell]
    probs, masks, area, cls = probs[keep], masks[keep], area[keep], cls[keep]
    score = score[keep] * (probs * masks).sum((1, 2)) / area.clamp_min(1)  # maskness
    order = score.argsort(descending=True)
    probs, masks, area, cls, score = probs[order], masks[order], area[order], cls[order], score[order]
    score = score * matrix_nms(masks.flatten(1), cls, area, settings.kernel, settings.sigma)
    keep = (score >= max(conf, settings.filter_thr)).nonzero().view(-1)
    keep = keep[score[keep].argsort(descending=True)][:max_det]
    return probs[keep], score[keep], cls[keep]


def decode_static(
    scores: torch.Tensor,
    kernels: torch.Tensor,
    mask_feats: torch.Tensor,
    settings: DecodeSettings,
    conf: float,
    max_det: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`decode_image` for a whole batch with fixed sizes, for graphs (end2end export): masking instead of filtering.

    The top `nms_pre` (cell, class) candidates of each image go through every step; the ones `decode_image` would drop
    get score 0, which sorts them below every kept candidate, so they change no other candidate's Matrix NMS decay.

    Args:
        scores (torch.Tensor): (B, R, nc) category scores after point NMS.
        kernels (torch.Tensor): (B, R, E) dynamic kernels.
        mask_feats (torch.Tensor): (B, E, h, w) mask features.
        settings (DecodeSettings): SOLO inference constants.
        conf (float): Score threshold for candidates and for final detections.
        max_det (int): Maximum detections.

    Returns:
        (tuple): Scores (B, D) in descending order (0 marks an empty slot), classes (B, D) and mask probabilities
            (B, D, h, w), D = min(max_det, nms_pre).
    """
    scores, kernels, mask_feats = scores.float(), kernels.float(), mask_feats.float()
    nc, e = scores.shape[2], mask_feats.shape[1]
    score, index = scores.flatten(1).topk(settings.nms_pre)  # (B, P)
    cell, cls = index // nc, index % nc
    probs = (kernels.gather(1, cell[..., None].expand(-1, -1, e)) @ mask_feats.flatten(2)).sigmoid()  # (B, P, h*w)
    masks = (probs > settings.mask_thr).float()
    area = masks.sum(2)  # (B, P)
    kept = (score > conf) & (area > settings.cell_strides(scores.device)[cell])
    score = torch.where(kept, score * (probs * masks).sum(2) / area.clamp_min(1), 0.0)  # maskness
    score, order = score.sort(1, descending=True)
    masks, area, cls = masks.gather(1, order[..., None].expand_as(masks)), area.gather(1, order), cls.gather(1, order)
    score = score * matrix_nms(masks, cls, area, settings.kernel, settings.sigma)
    score = torch.where(score >= max(conf, settings.filter_thr), score, 0.0)
    score, top = score.topk(min(max_det, settings.nms_pre))  # (B, D), indices into the sorted candidates
    unsorted = order.gather(1, top)  # (B, D) the same candidates before sorting, as `probs` holds them
    probs = probs.gather(1, unsorted[..., None].expand(-1, -1, probs.shape[2]))  # (B, D, h*w)
    probs = probs.view(probs.shape[0], -1, mask_feats.shape[2], mask_feats.shape[3])  # sizes stay dynamic in graphs
    return score, cls.gather(1, top), probs


def detections(preds, settings: DecodeSettings, conf: float, max_det: int) -> list[tuple]:
    """Detections of every image of a batch: (mask probabilities (n, h, w), scores (n,) descending, classes (n,)).

    `preds` are the head's dense outputs (decoded here by `decode_image`), or the outputs of an end2end export
    (`decode_static` ran in the graph, with the export's `conf` and `max_det`; here empty slots, scores below `conf`
    and slots beyond `max_det` are dropped).
    """
    if settings.end2end:
        out = []
        for score, cls, probs in zip(*preds):  # (D,), (D,), (D, h, w); scores descending
            keep = ((score > 0) & (score >= conf)).nonzero().view(-1)[:max_det]
            out.append((probs[keep], score[keep], cls[keep].long()))
        return out
    scores, kernels, mask_feats = dense_outputs(preds)
    return [decode_image(s, k, f, settings, conf, max_det) for s, k, f in zip(scores, kernels, mask_feats)]


def upsample_masks(probs: torch.Tensor, size: tuple[int, int], thr: float, chunk: int = 32) -> torch.Tensor:
    """Upsample mask probabilities (n, h, w) bilinearly to `size` and threshold them, `chunk` masks at a time."""
    out = torch.zeros((len(probs), *size), dtype=torch.bool, device=probs.device)
    for i in range(0, len(probs), chunk):
        up = F.interpolate(probs[None, i : i + chunk], size, mode="bilinear", align_corners=False)[0]
        out[i : i + chunk] = up > thr
    return out


def mask_boxes(masks: torch.Tensor) -> torch.Tensor:
    """Return xyxy boxes (n, 4) enclosing binary masks (n, H, W), edges on pixel borders; zeros for empty masks."""
    boxes = masks.new_zeros((len(masks), 4), dtype=torch.float32)
    filled = masks.flatten(1).any(1)
    if filled.any():
        boxes[filled] = masks_to_boxes(masks[filled]) + boxes.new_tensor([0, 0, 1, 1])  # last pixel's far edge
    return boxes

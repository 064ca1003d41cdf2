"""SOLOv2 inference from the head's dense outputs: pure functions shared by the validator and the predictor.

Per image: score threshold (Ultralytics' `conf`) -> top `nms_pre` (cell, class) candidates -> dynamic 1x1 convolution
-> mask threshold -> drop masks no larger than their level's stride -> maskness rescoring -> Matrix NMS -> scores of at
least `conf` (predict: max(conf, filter_thr)) -> `max_det`. The 2x2 point NMS runs in the head, so exported graphs
include it. One function, `decode`, does this for a whole batch with fixed sizes: end2end graphs run it, and the Python
postprocess runs it image by image with only the candidates above `conf`.

Shape shorthand in this module:
    R: grid cells over all levels; nc: number of classes; E: kernel size = mask-feature channels
    K: candidates of one image; n: detections of one image
    h, w: mask-feature height and width (input / 4); H, W: input height and width
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch
import torch.nn.functional as F


def dense_outputs(preds) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Return (scores, kernels, mask features) from the eval `(dense, raw)` pair or an export's three outputs."""
    return preds[0] if isinstance(preds[-1], dict) else preds


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
    offsets: bool = False  # kernels end with two weights for the cell-offset terms (`add_cell_offsets`)
    end2end: bool = False  # outputs are an end2end export's decoded detections, not dense outputs

    @classmethod
    def from_solo(cls, solo: dict) -> DecodeSettings:
        """Build the settings from a `solo` block, ignoring its training-only keys."""
        keys = ("nms_pre", "mask_thr", "kernel", "sigma", "filter_thr", "offsets")
        kwargs = {k: solo[k] for k in keys if k in solo}
        return cls(tuple(solo["num_grids"]), tuple(solo["strides"]), end2end="end2end" in solo, **kwargs)

    def cell_strides(self, device: torch.device | None = None) -> torch.Tensor:
        """Return the stride of each grid cell's level, (R,). Cached per device: decoding reads it for every batch."""
        return _cell_strides(tuple(self.num_grids), tuple(self.strides), torch.device(device or "cpu"))


@lru_cache(maxsize=16)
def _cell_strides(num_grids: tuple[int, ...], strides: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """`DecodeSettings.cell_strides` for hashable arguments; a normal tensor even if first built in inference mode."""
    with torch.inference_mode(False):
        counts = torch.tensor([s * s for s in num_grids], device=device)
        return torch.tensor(strides, dtype=torch.float32, device=device).repeat_interleave(counts)


def cell_geometry(num_grids: list[int] | tuple[int, ...], device: torch.device | None = None) -> torch.Tensor:
    """Return (R, 3): every grid cell's centre x and y as fractions of the input width and height, and its level's S.

    Cached per grids and device (callers must not modify it): decoding and the loss read it for every batch.
    """
    return _cell_geometry(tuple(num_grids), torch.device(device or "cpu"))


@lru_cache(maxsize=16)
def _cell_geometry(num_grids: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """`cell_geometry` for hashable arguments; a normal tensor even if first built in inference mode."""
    levels = []
    with torch.inference_mode(False):
        for s in num_grids:
            centre = (torch.arange(s, dtype=torch.float32, device=device) + 0.5) / s  # (S,)
            levels.append(torch.stack((centre.repeat(s), centre.repeat_interleave(s), centre.new_full((s * s,), s)), 1))
        return torch.cat(levels)


def above(x: torch.Tensor, thr: float) -> torch.Tensor:
    """`x > thr` as 0/1 values of x's dtype; `.bool()` of it is the bool mask.

    On CPU a comparison into x's own dtype is several times faster than one into bool, and so is casting floats to bool
    rather than bool to floats (this project's 2-core machine, 128k floats: 27 us vs 190-230 us for `x > thr` and 190 us
    more for `.float()`). Traced graphs compare as usual.
    """
    if torch.jit.is_tracing():
        return (x > thr).to(x.dtype)
    return torch.gt(x, thr, out=torch.empty_like(x))


def take_rows(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Rows `x[b, index[b]]` of every image b: (B, K, ...) and (B, D) -> (B, D, ...).

    One `index_select` over the flattened batch: on CPU several times faster than `gather` with an expanded index
    (1 x 20 x 6400 floats: 33 us vs 360 us).
    """
    b, k = x.shape[:2]
    flat = (index + torch.arange(b, device=index.device)[:, None] * k).flatten()  # (B * D,)
    return x.flatten(0, 1).index_select(0, flat).view(b, index.shape[1], *x.shape[2:])


def add_cell_offsets(logits: torch.Tensor, weights: torch.Tensor, geometry: torch.Tensor) -> torch.Tensor:
    """Mask logits (..., h, w) plus their cell-offset terms a * |x - cx| * S + b * |y - cy| * S at every pixel (x, y).

    The last two kernel weights (a, b) of a cell, applied to its distance in cells from every pixel: with negative
    weights the mask fades away from its cell, a box-free locality prior (CondInst gives its mask heads relative
    coordinates for the same reason); zero weights leave SOLOv2's dynamic convolution unchanged. The x and y terms are
    added one after the other: each broadcasts a row or a column, with no (..., h, w) tensor of terms in between.

    Args:
        logits (torch.Tensor): (..., h, w) mask logits of the dynamic convolution.
        weights (torch.Tensor): (..., 2) weights (a, b).
        geometry (torch.Tensor): (..., 3) the cells' `cell_geometry`.

    Returns:
        (torch.Tensor): (..., h, w) logits.
    """
    h, w = logits.shape[-2:]
    xs = (torch.arange(w, device=weights.device, dtype=weights.dtype) + 0.5) / w  # (w,)
    ys = (torch.arange(h, device=weights.device, dtype=weights.dtype) + 0.5) / h  # (h,)
    dx = (xs - geometry[..., 0:1]).abs() * geometry[..., 2:3]  # (..., w) distance in cells
    dy = (ys - geometry[..., 1:2]).abs() * geometry[..., 2:3]  # (..., h)
    return logits + (weights[..., 0:1] * dx)[..., None, :] + (weights[..., 1:2] * dy)[..., :, None]


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
    masks = masks.float()
    return overlap_decay(masks @ masks.transpose(-1, -2), labels, areas, kernel, sigma)


def overlap_decay(inter: torch.Tensor, labels: torch.Tensor, areas: torch.Tensor, kernel="gaussian", sigma=2.0):
    """`matrix_nms` from the masks' pairwise intersections (..., n, n) (pixel counts), masks sorted by descending score.

    Decoding computes the intersections before it sorts and sorts their rows and columns: n x n values, not n masks.
    """
    n = inter.shape[-1]
    if n == 0:
        return areas.new_ones(areas.shape, dtype=torch.float32)
    inter, areas = inter.float(), areas.float()
    iou = inter / (areas[..., :, None] + areas[..., None, :] - inter).clamp_min(1)
    order = torch.arange(n, device=inter.device)
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


def decode(
    scores: torch.Tensor,
    kernels: torch.Tensor,
    mask_feats: torch.Tensor,
    settings: DecodeSettings,
    conf: float,
    max_det: int,
    k: int | None = None,
    agnostic: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Decode a batch with fixed sizes: the one decode of the Python postprocess and of end2end graphs.

    Each image's top K (cell, class) candidates go through every step; a candidate scored at most `conf`, or whose mask
    is no larger than its level's stride, gets score 0, which sorts it below every kept candidate, so it changes no
    other candidate's Matrix NMS decay. Scores below `conf` after Matrix NMS are 0 too.

    Args:
        scores (torch.Tensor): (B, R, nc) category scores after point NMS.
        kernels (torch.Tensor): (B, R, E) dynamic kernels.
        mask_feats (torch.Tensor): (B, E, h, w) mask features.
        settings (DecodeSettings): SOLO inference constants.
        conf (float): Score threshold for candidates and for final detections.
        max_det (int): Maximum detections.
        k (int, optional): Candidates per image, K, at most `nms_pre` (the default, used by graphs). The Python path
            passes the number of scores above `conf`, which gives the same detections with less work.
        agnostic (bool): Matrix NMS across classes (Ultralytics' `agnostic_nms`, `single_cls`).

    Returns:
        (tuple): Scores (B, D) in descending order (0 marks an empty slot), classes (B, D) and mask probabilities
            (B, D, h, w), D = min(max_det, K).
    """
    scores, kernels, mask_feats = scores.float(), kernels.float(), mask_feats.float()
    nc, e = scores.shape[2], mask_feats.shape[1]
    k = min(settings.nms_pre, scores.shape[1] * nc, settings.nms_pre if k is None else k)
    score, index = scores.flatten(1).topk(k)  # (B, K)
    cell, cls = index // nc, index % nc
    kernels = take_rows(kernels, cell)  # (B, K, E [+ 2])
    logits = kernels[..., :e] @ mask_feats.flatten(2)  # (B, K, h*w)
    if settings.offsets:
        geometry = cell_geometry(settings.num_grids, scores.device)[cell]  # (B, K, 3)
        logits = logits.view(logits.shape[0], logits.shape[1], mask_feats.shape[2], mask_feats.shape[3])
        logits = add_cell_offsets(logits, kernels[..., e:], geometry).flatten(2)
    probs = logits.sigmoid()
    masks = above(probs, settings.mask_thr)  # (B, K, h*w) 0/1
    area = masks.sum(2)  # (B, K)
    kept = (score > conf) & (area > settings.cell_strides(scores.device)[cell])
    score = torch.where(kept, score * (probs * masks).sum(2) / area.clamp_min(1), 0.0)  # maskness
    inter = masks @ masks.transpose(1, 2)  # (B, K, K) intersections, in candidate order
    score, order = score.sort(1, descending=True)
    rows = inter.gather(1, order[..., None].expand_as(inter))
    inter = rows.gather(2, order[:, None].expand_as(inter))  # (B, K, K) in score order
    area, cls = area.gather(1, order), cls.gather(1, order)
    labels = torch.zeros_like(cls) if agnostic else cls  # one class for Matrix NMS: every mask decays every other
    score = score * overlap_decay(inter, labels, area, settings.kernel, settings.sigma)
    score = torch.where(score >= conf, score, 0.0)
    score, top = score.topk(min(max_det, k))  # (B, D), indices into the sorted candidates
    unsorted = order.gather(1, top)  # (B, D) the same candidates before sorting, as `probs` holds them
    probs = take_rows(probs, unsorted)  # (B, D, h*w)
    probs = probs.view(probs.shape[0], probs.shape[1], mask_feats.shape[2], mask_feats.shape[3])  # dynamic in graphs
    return score, cls.gather(1, top), probs


def detections(
    preds,
    settings: DecodeSettings,
    conf: float,
    max_det: int,
    min_score: float | None = None,
    classes: list[int] | None = None,
    agnostic: bool = False,
) -> list[tuple]:
    """Detections of every image of a batch: (mask probabilities (n, h, w), scores (n,) descending, classes (n,)).

    Args:
        preds: The head's dense outputs (decoded here by `decode`, image by image with as many candidates as it has
            scores above `conf`), or the outputs of an end2end export (decoded in the graph with the export's `conf`,
            `max_det` and `agnostic`).
        settings (DecodeSettings): SOLO inference constants.
        conf (float): Score threshold for candidates and for final detections.
        max_det (int): Maximum detections per image.
        min_score (float, optional): Final score threshold, default `conf` (predict passes max(conf, filter_thr)).
        classes (list[int], optional): Keep only these classes (filtered before Matrix NMS, as YOLO's NMS does).
        agnostic (bool): Class-agnostic Matrix NMS.
    """
    min_score = conf if min_score is None else min_score
    if settings.end2end:
        decoded = zip(*preds)  # (D,), (D,), (D, h, w) per image, scores descending
    else:
        scores, kernels, mask_feats = dense_outputs(preds)
        if classes is not None:
            keep = torch.zeros(scores.shape[-1], device=scores.device)
            keep[[c for c in classes if c < len(keep)]] = 1
            scores = scores * keep
        decoded = []
        for s, ker, f in zip(scores, kernels, mask_feats):  # (R, nc), (R, E), (E, h, w) per image
            image = decode(s[None], ker[None], f[None], settings, conf, max_det, int((s > conf).sum()), agnostic)
            decoded.append([t[0] for t in image])
    out = []
    for score, cls, probs in decoded:
        n = int(((score > 0) & (score >= min_score)).sum())  # scores descend: the detections kept come first
        probs, score, cls = probs[:n], score[:n], cls[:n].long()  # views, no copies
        if classes is not None and settings.end2end:  # end2end graphs decode every class
            keep = torch.isin(cls, torch.tensor(classes, device=cls.device))
            probs, score, cls = probs[keep], score[keep], cls[keep]
        out.append((probs[:max_det], score[:max_det], cls[:max_det]))
    return out


def upsample_probs(probs: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Upsample mask probabilities (n, h, w) bilinearly to `size`, (n, *size)."""
    if len(probs) == 0:
        return probs.new_zeros((0, *size))
    return F.interpolate(probs[None], size, mode="bilinear", align_corners=False)[0]


def windowable(probs: torch.Tensor, size: tuple[int, int]) -> int:
    """The scale from mask features (n, h, w) to `size` if it is one power of two for both sides, else 0.

    Then the bilinear upsampling of a window of the features, offset by whole pixels, has the very interpolation weights
    of upsampling them all (exact scale), and every output pixel outside the window of rows and columns that hold a
    probability above the threshold, one more on each side, interpolates values at or below it: `feature_windows`.
    """
    h, w = probs.shape[1:]
    scale = size[0] // h
    return scale if tuple(size) == (scale * h, scale * w) and scale & (scale - 1) == 0 else 0


def feature_windows(probs: torch.Tensor, thr: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per mask, the window of the mask features that upsampling needs to find its pixels above `thr` (`windowable`).

    Returns:
        (tuple): Windows (n, 4) as rows r0:r1 and columns c0:c1 (the rows and columns holding a probability above
            `thr`, one more on each side), and (n,) whether the mask has any probability above `thr`.
    """
    h, w = probs.shape[1:]
    x1, y1, x2, y2 = boxes_above(probs, thr).long().unbind(1)
    windows = torch.stack(((y1 - 1).clamp_min(0), (y2 + 1).clamp_max(h), (x1 - 1).clamp_min(0), (x2 + 1).clamp_max(w)))
    return windows.T, x2 > 0


def upsample_masks(probs: torch.Tensor, size: tuple[int, int], thr: float, chunk: int = 32) -> torch.Tensor:
    """Upsample mask probabilities (n, h, w) bilinearly to `size` and threshold them, `chunk` masks at a time.

    Where `windowable`, only the window that holds every mask's pixels is upsampled; the masks are the same.
    """
    n, h, w = probs.shape
    out = torch.zeros((n, *size), dtype=torch.bool, device=probs.device)
    r0, r1, c0, c1 = 0, h, 0, w  # window of the mask features
    if n and windowable(probs, size):
        window, filled = feature_windows(probs.amax(0, keepdim=True), thr)  # of the pixels any mask holds
        if not filled[0]:
            return out
        r0, r1, c0, c1 = window[0].tolist()
    y0, y1, x0, x1 = r0 * size[0] // h, r1 * size[0] // h, c0 * size[1] // w, c1 * size[1] // w
    crop = probs[:, r0:r1, c0:c1]
    for i in range(0, n, chunk):
        out[i : i + chunk, y0:y1, x0:x1] = above(upsample_probs(crop[i : i + chunk], (y1 - y0, x1 - x0)), thr).bool()
    return out


def upsampled_mask_boxes(probs: torch.Tensor, size: tuple[int, int], thr: float, chunk: int = 32) -> torch.Tensor:
    """`mask_boxes(upsample_masks(probs, size, thr))`, (n, 4), upsampling each mask's own window only (`windowable`).

    Validation boxes up to 300 masks per image, most of them small: their windows hold a few percent of the pixels.
    Masks are taken in order of window area, `chunk` at a time (`window_boxes`).
    """
    scale = windowable(probs, size)
    if not scale:
        return mask_boxes(upsample_masks(probs, size, thr))
    boxes = probs.new_zeros((len(probs), 4))
    windows, filled = feature_windows(probs, thr)
    index = filled.nonzero().view(-1)  # (m,) masks with a probability above thr
    extent = windows[index, 1::2] - windows[index, 0::2]  # (m, 2) window heights and widths
    index = index[extent.prod(1).argsort()]
    for i in range(0, len(index), chunk):
        ids = index[i : i + chunk]
        boxes[ids] = window_boxes(probs[ids], windows[ids], scale, thr)
    return boxes


def window_boxes(probs: torch.Tensor, windows: torch.Tensor, scale: int, thr: float) -> torch.Tensor:
    """Boxes (n, 4) of masks (n, h, w) upsampled by `scale` (a power of two) and thresholded, from their `windows`.

    One batched upsampling of same-size crops, each the largest window's size and holding its mask's own window: a crop
    larger than the window, offset by whole pixels, gives the window's pixels the very values upsampling everything
    gives them, and its other pixels stay at or below `thr` (`windowable`).
    """
    h, w = probs.shape[1:]
    r0, r1, c0, c1 = windows.unbind(1)  # (n,) each
    hc, wc = int((r1 - r0).max()), int((c1 - c0).max())  # crop size
    top, left = r0.clamp_max(h - hc), c0.clamp_max(w - wc)  # (n,) crop origins: inside the features, over the window
    rows = top[:, None] + torch.arange(hc, device=probs.device)  # (n, hc)
    cols = left[:, None] + torch.arange(wc, device=probs.device)  # (n, wc)
    crops = probs[torch.arange(len(probs), device=probs.device)[:, None, None], rows[:, :, None], cols[:, None, :]]
    box = boxes_above(upsample_probs(crops, (hc * scale, wc * scale)), thr)  # (n, 4) in the crops
    origin = torch.stack((left, top, left, top), 1) * scale  # (n, 4)
    return (box + origin) * (box[:, 2:3] > 0)  # empty once upsampled: zeros


def mask_boxes(masks: torch.Tensor) -> torch.Tensor:
    """Return xyxy boxes (n, 4) enclosing binary masks (n, H, W), edges on pixel borders; zeros for empty masks.

    Reduces uint8 views with `amax`, not `torchvision.ops.masks_to_boxes`: its boolean `any` reductions are 5-10x slower
    on CPU, and every prediction's box comes from its mask.
    """
    m = masks.view(torch.uint8) if masks.dtype == torch.bool else (masks != 0).to(torch.uint8)
    return extent_boxes(m.amax(2), m.amax(1))


def boxes_above(probs: torch.Tensor, thr: float) -> torch.Tensor:
    """`mask_boxes(probs > thr)` from the maxima of rows and columns, without thresholding every pixel."""
    return extent_boxes(above(probs.amax(2), thr), above(probs.amax(1), thr))


def extent_boxes(rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """Boxes (n, 4) from 0/1 values (n, H) and (n, W) that mark the rows and columns holding mask pixels."""
    y1, x1 = rows.argmax(1), cols.argmax(1)  # first filled row / column
    y2, x2 = rows.shape[1] - rows.flip(1).argmax(1), cols.shape[1] - cols.flip(1).argmax(1)  # last one's far edge
    return torch.stack((x1, y1, x2, y2), 1).float() * rows.amax(1, keepdim=True)  # empty masks: 0

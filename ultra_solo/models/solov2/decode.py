"""SOLOv2 inference from the head's dense outputs: the one decode of the validator, the predictor and end2end graphs.

Per image: category-score threshold (`DecodeSettings.candidate_conf` of Ultralytics' `conf`) -> top `nms_pre` (cell,
class) candidates -> dynamic 1x1 convolution (`GridLayout.mask_logits`) -> mask threshold -> drop masks no larger than
their level's stride -> maskness rescoring -> drop rescored scores that can no longer reach `conf` -> Matrix NMS ->
back to SOLOv2's score scale (`score_exponent`) -> scores of at least `conf` (predict: max(conf, filter_thr)) ->
`max_det` -> mask voting (`vote_thr`: each detection's probabilities averaged with those of its duplicates among the
candidates, by score). The 2x2 point NMS runs in the head, so exported graphs include it. One function, `decode`,
does this for a whole batch: end2end graphs run it with fixed sizes, and the Python postprocess runs it image by image
with only the candidates above that threshold and Matrix NMS over only the rescored candidates left.

Shape shorthand in this module:
    B: images; R: grid cells over all levels; nc: number of classes; E: mask-feature channels
    K: candidates of one image; D: detection slots of one image; n: detections of one image
    h, w: mask-feature height and width (input / 4)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .layout import GridLayout, eager_inference, input_shape
from .resample import above
from .settings import SOLOSettings


def dense_outputs(preds) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Return (scores, kernels, mask features) from the eval `(dense, raw)` pair or an export's three outputs."""
    return preds[0] if isinstance(preds[-1], dict) else preds


@dataclass(frozen=True)
class DecodeSettings:
    """What decoding needs: the head's grid and kernel layout and the SOLO inference constants."""

    layout: GridLayout
    nms_pre: int = 500
    mask_thr: float = 0.5
    maskness_power: float = 6.0
    kernel: str = "gaussian"
    sigma: float = 2.0
    filter_thr: float = 0.05
    vote_thr: float = 0.0  # off here; a model's comes from its `SOLOSettings` (0.7 unless its YAML says otherwise)
    end2end: bool = False  # outputs are an end2end export's decoded detections, not dense outputs

    @classmethod
    def from_settings(cls, settings: SOLOSettings, layout: GridLayout) -> DecodeSettings:
        """The decoding part of a model's settings, with its head's layout."""
        constants = {
            k: getattr(settings, k)
            for k in ("nms_pre", "mask_thr", "maskness_power", "kernel", "sigma", "filter_thr", "vote_thr")
        }
        return cls(layout, end2end=settings.end2end is not None, **constants)

    @property
    def score_exponent(self) -> float:
        """The power that puts scores rescored by `maskness_power` back on the scale of SOLOv2's (power 1), for `conf`.

        Scores times maskness^p shrink with p (a maskness of 0.8 to the 6th is 0.26), so predict's conf 0.25 would cut
        most true masks. Raising them to this power (monotone: the ranking, hence every AP, is unchanged) gives a
        candidate of category score 0.25 and maskness 0.8 SOLOv2's score, 0.25 x 0.8; 1 at power 1.
        """
        if self.maskness_power == 1:
            return 1.0
        anchor_score, anchor_maskness = 0.25, 0.8
        solov2 = math.log(anchor_score * anchor_maskness)
        return solov2 / (math.log(anchor_score) + self.maskness_power * math.log(anchor_maskness))

    def candidate_conf(self, conf: float) -> float:
        """The category score a candidate needs to end at `conf` or above: its final score is at most its category
        score to `score_exponent` (maskness and decay are at most 1), so this threshold drops no detection."""
        return conf ** (1 / self.score_exponent)


def take_rows(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Rows `x[b, index[b]]` of every image b: (B, K, ...) and (B, D) -> (B, D, ...).

    One `index_select` over the flattened batch, several times faster on CPU than `gather` with an expanded index
    (`benchmarks/ops.py`).
    """
    b, k = x.shape[:2]
    flat = (index + torch.arange(b, device=index.device)[:, None] * k).flatten()  # (B * D,)
    return x.flatten(0, 1).index_select(0, flat).view(b, index.shape[1], *x.shape[2:])


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


def intersections(masks: torch.Tensor, blocks: int = 1, min_block: int = 64) -> torch.Tensor:
    """Pixel counts (B, K, K) of the pairwise intersections of 0/1 masks (B, K, P), as float32: all of them, or with
    `blocks` > 1 at least those on and above the diagonal, the ones Matrix NMS reads.

    On CPU outside traced or compiled graphs (`int8_products`), an int8 matrix product with int32 sums
    (`torch._int_mm`, exact for any count below 2**31): about 9x faster there than the float32 product
    (`benchmarks/ops.py`), which it equals. It runs in `blocks` row blocks, each against the columns from its own
    diagonal on (about 5/8 of the full product at 4 blocks; below those blocks the counts are 0), blocks of at least
    `min_block` rows (predict's few masks: one product). Float32 elsewhere (GPUs, exports), always the full product.
    """
    if not int8_products(masks):
        return masks @ masks.transpose(1, 2)
    m = masks.to(torch.int8)
    k = m.shape[1]
    inter = torch.zeros((*m.shape[:2], k), dtype=torch.int32)
    step = max(min_block, -(-k // blocks))
    for b, x in enumerate(m):
        for i in range(0, k, step):
            inter[b, i : i + step, i:] = torch._int_mm(x[i : i + step], x[i:].T)
    return inter.float()


def int8_products(masks: torch.Tensor) -> bool:
    """Whether intersections of `masks` are counted with `torch._int_mm`: on CPU, outside traced or compiled graphs."""
    graph = torch.jit.is_tracing() or torch.compiler.is_compiling()
    return masks.device.type == "cpu" and not graph and hasattr(torch, "_int_mm")


def sorted_intersections(masks: torch.Tensor, order: torch.Tensor, blocks: int = 4) -> torch.Tensor:
    """Pairwise intersections (B, n, n) of the masks (B, K, P) that `order` (B, n) picks, in that order, at least on
    and above the diagonal (`overlap_decay` uses only masks scored above a mask).

    With int8 products (`int8_products`) the picked masks' rows are taken in int8 and counted in `blocks` row blocks
    (`intersections`). Otherwise, when `order` picks at most half of the masks, their rows are taken first; else all
    K x K intersections are computed and their rows and columns picked (n x n values, not n masks).
    """
    if int8_products(masks):
        return intersections(take_rows(masks.to(torch.int8), order), blocks)  # in score order
    if 2 * order.shape[1] <= masks.shape[1]:
        return intersections(take_rows(masks, order))
    inter = intersections(masks)  # (B, K, K)
    rows = inter.gather(1, order[..., None].expand(-1, -1, inter.shape[2]))  # (B, n, K)
    return rows.gather(2, order[:, None].expand(-1, order.shape[1], -1))


def pair_iou(inter: torch.Tensor, area_a: torch.Tensor, area_b: torch.Tensor) -> torch.Tensor:
    """IoU of mask pairs from their intersections and their two areas (pixel counts, broadcast together); 0 where both
    are empty."""
    return inter / (area_a + area_b - inter).clamp_min(1)


def overlap_decay(inter: torch.Tensor, labels: torch.Tensor, areas: torch.Tensor, kernel="gaussian", sigma=2.0):
    """`matrix_nms` from the masks' pairwise intersections (..., n, n) (pixel counts), masks sorted by descending score.

    Decoding computes the intersections before it sorts and sorts their rows and columns: n x n values, not n masks.
    """
    n = inter.shape[-1]
    if n == 0:
        return areas.new_ones(areas.shape, dtype=torch.float32)
    inter, areas = inter.float(), areas.float()
    iou = pair_iou(inter, areas[..., :, None], areas[..., None, :])
    order = torch.arange(n, device=inter.device)
    same = labels[..., :, None] == labels[..., None, :]
    iou = torch.where((order[:, None] < order[None, :]) & same, iou, 0.0)  # (..., n, n): only k above j, same class
    own = iou.amax(-2)  # (..., n) c_k
    if kernel == "gaussian":
        decay = torch.exp(-sigma * (iou.square() - own.square()[..., :, None]))
    elif kernel == "linear":
        decay = (1 - iou) / (1 - own[..., :, None]).clamp_min(1e-6)
    else:
        raise ValueError(f"Matrix NMS kernel must be 'gaussian' or 'linear', not '{kernel}'")
    return decay.amin(-2)


def rescored(score: torch.Tensor, inside: torch.Tensor, area: torch.Tensor, power: float) -> torch.Tensor:
    """Scores (B, K) times the maskness of their masks to `power`: the sum `inside` (B, K) of each mask's probabilities
    over its `area` (B, K) pixels, averaged. Power 1 computes SOLOv2's product in SOLOv2's order, to the last bit."""
    if power == 1:
        return score * inside / area.clamp_min(1)
    return score * (inside / area.clamp_min(1)) ** power


def decode(
    scores: torch.Tensor,
    kernels: torch.Tensor,
    mask_feats: torch.Tensor,
    settings: DecodeSettings,
    conf: float,
    max_det: int,
    k: int | None = None,
    agnostic: bool = False,
    compact: bool = False,
    with_masks: bool = False,
) -> tuple[torch.Tensor, ...]:
    """Decode a batch: the one decode of the Python postprocess and (with fixed sizes) of end2end graphs.

    Each image's top K (cell, class) candidates are rescored; a candidate scored at most `candidate_conf`, whose mask
    is no larger than its level's stride, or whose rescored score is below `candidate_conf` (its final score, at most
    that to `score_exponent`, cannot reach `conf`), gets score 0, which sorts it below every kept candidate, so it
    changes no other candidate's Matrix NMS decay (which only higher-scored masks set). Scores below `conf` after
    Matrix NMS are 0 too.

    Args:
        scores (torch.Tensor): (B, R, nc) category scores after point NMS.
        kernels (torch.Tensor): (B, R, C) dynamic kernels, laid out as `settings.layout` says.
        mask_feats (torch.Tensor): (B, E, h, w) mask features.
        settings (DecodeSettings): SOLO inference constants.
        conf (float): Score threshold for candidates and for final detections.
        max_det (int): Maximum detections.
        k (int, optional): Candidates per image, K, at most `nms_pre` (the default, used by graphs). The Python path
            passes the number of scores above `candidate_conf`, which gives the same detections with less work.
        agnostic (bool): Matrix NMS across classes (Ultralytics' `agnostic_nms`, `single_cls`).
        compact (bool): Drop the candidates scored 0 before Matrix NMS, and the scores below `conf` after it, instead
            of carrying them (sizes then depend on the data, so graphs keep False): the same detections, with Matrix
            NMS over n <= K masks and only the detections kept voted.
        with_masks (bool): Also return the detections' masks, their probabilities above `settings.mask_thr`, as
            decoding made them for Matrix NMS.

    Returns:
        (tuple): Scores (B, D) in descending order (0 marks an empty slot), classes (B, D) and mask probabilities
            (B, D, h, w), D = min(max_det, K) (compact: at most the scores of at least `conf`); with `with_masks`,
            bool masks (B, D, h, w) too.
    """
    k = min(settings.nms_pre, scores.shape[1] * scores.shape[2], settings.nms_pre if k is None else k)
    score, cls, probs, masks, area = candidates(scores.float(), kernels.float(), mask_feats.float(), settings, conf, k)
    if compact:  # only the candidates left go on: (B, n), n <= K
        score, order = score.topk(int((score > 0).sum(1).max()))
    else:
        score, order = score.sort(1, descending=True)
    inter = sorted_intersections(masks, order)  # (B, n, n) in score order
    area, cls = area.gather(1, order), cls.gather(1, order)
    labels = torch.zeros_like(cls) if agnostic else cls  # one class for Matrix NMS: every mask decays every other
    before = score  # (B, n) the candidates' scores before Matrix NMS: their weights in mask voting
    score = score * overlap_decay(inter, labels, area, settings.kernel, settings.sigma)
    if settings.maskness_power != 1:
        score = score**settings.score_exponent
    score = torch.where(score >= conf, score, 0.0)
    d = int((score > 0).sum(1).max()) if compact else score.shape[1]  # compact: no slots for scores below conf
    score, top = score.topk(min(max_det, d))  # (B, D), indices into the sorted candidates
    unsorted = order.gather(1, top)  # (B, D) the same candidates before sorting, as `probs` holds them
    shape = (top.shape[0], top.shape[1], mask_feats.shape[2], mask_feats.shape[3])  # dynamic in graphs
    if settings.vote_thr:
        weights = vote_weights(inter, area, labels, before, top, settings.vote_thr)  # (B, D, n)
        probs = voted_probs(probs, order, unsorted, weights)  # (B, D, h*w)
        masks = above(probs, settings.mask_thr) if with_masks else None
    else:
        probs = take_rows(probs, unsorted)  # (B, D, h*w)
        masks = take_rows(masks, unsorted) if with_masks else None  # 0/1, int8 from `block_statistics`
    if not with_masks:
        return score, cls.gather(1, top), probs.view(shape)
    masks = masks.view(torch.bool) if masks.dtype == torch.int8 else masks.bool()  # int8's bytes are bools
    return score, cls.gather(1, top), probs.view(shape), masks.view(shape)


def vote_weights(
    inter: torch.Tensor, area: torch.Tensor, labels: torch.Tensor, score: torch.Tensor, top: torch.Tensor, thr: float
) -> torch.Tensor:
    """Mask voting's weights (B, D, n): for each detection, the scores of the candidates of its class whose masks
    overlap its own with IoU above `thr`, itself included; 0 elsewhere.

    Args:
        inter (torch.Tensor): (B, n, n) intersections of the candidates in score order, valid on and above the
            diagonal (`sorted_intersections`).
        area (torch.Tensor): (B, n) their areas. labels (torch.Tensor): (B, n) their Matrix NMS classes.
        score (torch.Tensor): (B, n) their scores before Matrix NMS (0: dropped candidates, which do not vote).
        top (torch.Tensor): (B, D) the detections, as positions among the n.
        thr (float): `DecodeSettings.vote_thr`.
    """
    n = inter.shape[-1]
    pick = top[..., None].expand(-1, -1, n)  # (B, D, n)
    rows, cols = inter.gather(1, pick), inter.transpose(1, 2).gather(1, pick)  # inter[t, j], inter[j, t]
    later = torch.arange(n, device=top.device) >= top[..., None]  # (B, D, n): j at or after the detection t
    counts = torch.where(later, rows, cols)  # (B, D, n) each pair read where it was counted
    area = area.float()
    own = area.gather(1, top)[..., None]  # (B, D, 1)
    iou = pair_iou(counts, own, area[:, None])
    same = labels.gather(1, top)[..., None] == labels[:, None]  # (B, D, n)
    return torch.where((iou > thr) & same, score[:, None], 0.0)


def voted_probs(
    probs: torch.Tensor, order: torch.Tensor, unsorted: torch.Tensor, weights: torch.Tensor, sparse_from: int = 2048
):
    """Mask voting (FCIS, MNC): each detection's probabilities (B, D, h*w), the mean of its voters' probabilities
    weighted by `vote_weights` (B, D, n); a detection without voters keeps its own.

    One image in eager mode with at least `sparse_from` weights (D x n: validation's hundreds of detections) is pooled
    by `pool_votes`; otherwise (predict's few detections and candidates, batches, graphs) by a dense product, which
    there costs less than `pool_votes`' fixed steps (`benchmarks/ops.py`).

    Args:
        probs (torch.Tensor): (B, K, h*w) every candidate's probabilities, as `candidates` made them.
        order (torch.Tensor): (B, n) the candidates in score order, indices into K.
        unsorted (torch.Tensor): (B, D) the detections, indices into K.
        weights (torch.Tensor): (B, D, n) from `vote_weights`.
        sparse_from (int): The fewest weights pooled by `pool_votes`.
    """
    total = weights.sum(2, keepdim=True)  # (B, D, 1)
    own = take_rows(probs, unsorted)  # (B, D, h*w)
    if eager_inference(probs) and probs.shape[0] == 1 and weights[0].numel() >= sparse_from:
        return pool_votes(probs[0], order[0], weights[0] / total[0].clamp_min(1e-12), own[0])[None]
    pooled = (weights / total.clamp_min(1e-12)) @ take_rows(probs, order)  # (B, D, h*w)
    return torch.where(total > 0, pooled, own)


def pool_votes(probs: torch.Tensor, order: torch.Tensor, weights: torch.Tensor, own: torch.Tensor) -> torch.Tensor:
    """`voted_probs` of one image on CPU: only the detections with voters besides themselves are pooled, each distinct
    row of weights once, as a sparse product. At conf 0.001 an object's duplicates are many and vote for each other
    alike, but each row has few voters (yolo11n-solo on package-seg: about 190 pooled detections, 70 distinct rows,
    270 voters in all, 6 per row), so a sparse product does about 1/40 of the multiplications of a dense one over all
    the voters; on CPU it took about 0.6x the dense one's time in all (`benchmarks/ops.py`).

    Args:
        probs (torch.Tensor): (K, h*w) the candidates' probabilities. order (torch.Tensor): (n,) sorted -> K.
        weights (torch.Tensor): (D, n) normalised voting weights. own (torch.Tensor): (D, h*w) the detections' own
            probabilities, overwritten with the pooled ones.
    """
    pooled = ((weights > 0).sum(1) > 1).nonzero()[:, 0]  # (d,)
    if not len(pooled):
        return own
    rows, inverse = torch.unique(weights[pooled], dim=0, return_inverse=True)  # (u, n), (d,)
    voters = (rows > 0).any(0).nonzero()[:, 0]  # (v,) the candidates that vote at all
    voted = torch.sparse.mm(rows[:, voters].to_sparse(), probs.index_select(0, order[voters]))  # (u, h*w)
    return own.index_copy_(0, pooled, voted.index_select(0, inverse))


def candidates(
    scores: torch.Tensor, kernels: torch.Tensor, mask_feats: torch.Tensor, settings: DecodeSettings, conf: float, k: int
) -> tuple[torch.Tensor, ...]:
    """The top `k` (cell, class) candidates of every image with their masks, rescored (`decode`'s first steps).

    Returns:
        (tuple): Rescored scores (B, K), 0 for the candidates `decode` drops; classes (B, K); mask probabilities and
            0/1 masks (B, K, h*w); mask areas (B, K).
    """
    nc = scores.shape[2]
    score, index = scores.flatten(1).topk(k)  # (B, K)
    cell, cls = index // nc, index % nc
    layout = settings.layout
    shape = layout.grid_input(input_shape(mask_feats), scores.shape[1])
    logits = layout.mask_logits(take_rows(kernels, cell), mask_feats, cell, shape).flatten(2)  # (B, K, h*w)
    if in_blocks(logits):
        probs, masks, area, inside = block_statistics(logits, settings.mask_thr)
    else:
        probs = logits.sigmoid_() if eager_inference(logits) else logits.sigmoid()
        masks = above(probs, settings.mask_thr)  # (B, K, h*w) 0/1
        area, inside = masks.sum(2), (probs * masks).sum(2)  # (B, K)
    need = settings.candidate_conf(conf)
    kept = (score > need) & (area > layout.cell_strides(scores.device, shape)[cell])
    score = rescored(score, inside, area, settings.maskness_power)
    kept = kept & (score >= need * (1 - 1e-6))  # margin: float rounding of conf ** (1 / exponent) ** exponent
    return torch.where(kept, score, 0.0), cls, probs, masks, area


def in_blocks(logits: torch.Tensor) -> bool:
    """Whether `candidates` makes masks from `logits` in blocks of candidates (`block_statistics`): on CPU, outside
    traced or compiled graphs."""
    return logits.device.type == "cpu" and eager_inference(logits)


def block_statistics(logits: torch.Tensor, thr: float, block: int = 32) -> tuple[torch.Tensor, ...]:
    """`candidates`' probabilities, 0/1 masks, areas and sums of the probabilities inside the masks from mask logits
    (B, K, h*w), `block` candidates at a time: the very values of each step over all K candidates at once.

    On CPU each such step is a pass over K x h*w values (12.8 MB of float32 for 500 masks of 80 x 80) through memory;
    a block's (32 masks: 0.8 MB) stays in the core's cache from the sigmoid to the sums.

    Returns:
        (tuple): Probabilities (B, K, h*w) (`logits`, overwritten), int8 0/1 masks (B, K, h*w), areas (B, K) and sums
            of the probabilities inside the masks (B, K).
    """
    masks = torch.empty(logits.shape, dtype=torch.int8, device=logits.device)
    area, inside = logits.new_empty(logits.shape[:2]), logits.new_empty(logits.shape[:2])
    for i in range(0, logits.shape[1], block):
        rows = slice(i, i + block)
        p = logits[:, rows].sigmoid_()  # (B, c, h*w)
        m = above(p, thr)  # (B, c, h*w) 0/1
        area[:, rows], masks[:, rows] = m.sum(2), m
        inside[:, rows] = m.mul_(p).sum(2)
    return logits, masks, area, inside


def detections(
    preds,
    settings: DecodeSettings,
    conf: float,
    max_det: int,
    min_score: float | None = None,
    classes: list[int] | None = None,
    agnostic: bool = False,
    with_masks: bool = False,
) -> list[tuple]:
    """Detections of every image of a batch: (mask probabilities (n, h, w), scores (n,) descending, classes (n,)), and
    with `with_masks` their bool masks (n, h, w), the probabilities above `settings.mask_thr`.

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
        with_masks (bool): Also return the masks (the validator's; decoding has them, so they cost no threshold).
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
        decoded, candidate_conf = [], settings.candidate_conf(conf)
        for s, ker, f in zip(scores, kernels, mask_feats):  # (R, nc), (R, C), (E, h, w) per image
            k = int((s > candidate_conf).sum())
            image = decode(s[None], ker[None], f[None], settings, conf, max_det, k, agnostic, True, with_masks)
            decoded.append([t[0] for t in image])
    out = []
    for score, cls, probs, *masks in decoded:
        n = int(((score > 0) & (score >= min_score)).sum())  # scores descend: the detections kept come first
        found = [probs[:n], score[:n], cls[:n].long(), *(m[:n] for m in masks)]  # views, no copies
        if classes is not None and settings.end2end:  # end2end graphs decode every class
            keep = torch.isin(found[2], torch.tensor(classes, device=cls.device))
            found = [x[keep] for x in found]
        found = [x[:max_det] for x in found]
        if with_masks and settings.end2end:
            found.append(above(found[0], settings.mask_thr).bool())
        out.append(tuple(found))
    return out

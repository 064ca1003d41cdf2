"""SOLO's settings: the model YAML's `solo` block, read in one place, and the Ultralytics defaults SOLO changes.

Ultralytics' `train()` rejects keys it does not know, so SOLO's own constants live in the model YAML (`solo:`) and
travel with checkpoints (`model.yaml`) and exports (metadata). `SOLOSettings.from_dict` is the one reader of that block:
it checks every key and gives the head, the loss and decoding typed values.
"""

from __future__ import annotations

import ast
from dataclasses import asdict, dataclass, fields

SOLO_ARG_DEFAULTS = {"overlap_mask": False}  # Ultralytics arguments SOLO's trainer and validator default differently:
# per-instance ground-truth masks, so pixels an instance shares with a smaller one stay in its target


@dataclass(frozen=True)
class SOLOSettings:
    """The `solo` block of a model YAML (README, "SOLO settings").

    Attributes:
        num_grids (tuple[int, ...]): S x S grid cells of each head level.
        scale_ranges (tuple[tuple[float, float], ...]): sqrt(w * h) / imgsz of the instances each level learns.
        strides (tuple[int, ...] | None): Level strides. The head knows its own (`SOLOHead.layout`); a YAML may state
            them, and they must then agree. Exports carry the head's.
        offsets (bool): Two cell-offset weights per kernel (`layout.GridLayout`).
        offset_bias (tuple[float, float]): Initial bias of the two cell-offset weights (x, y: mask logit per cell of
            distance from the cell), kept when a YOLO-seg checkpoint is transferred. (0, 0): masks start without any
            decay from their cell, a YOLO checkpoint's masks before the box crop; negative: every mask starts fading
            away from its cell, a soft crop (README "Fine-tuning from a YOLO-seg checkpoint").
        transfer_head (bool): `pretrained=` a YOLO-seg checkpoint gives the head its branches too (`transfer.py`);
            False: the trunk only, the head starts from SOLO's own initialisation.
        pos_scale (float): Positive cells lie within pos_scale x (w/2, h/2) of the mask's centre of mass.
        cls_weight, mask_weight (float): Focal and dice loss weights.
        bce_weight (float): Weight of a per-pixel binary cross-entropy term on the positives' masks (0: dice only).
        band_weight (float): Weight of a dice term over the ground truth's boundary band (Boundary IoU's: 2 % of the
            loss masks' diagonal; 0: none).
        loss_stride (int): The mask loss compares masks at input / loss_stride: 4 is the mask features' own stride;
            2 or 1 upsample the mask probabilities bilinearly, as decoding does, and train on finer ground truth.
        coverage_targets (bool): The mask loss's ground truth at input / loss_stride is each pixel's covered fraction,
            averaged from masks made at input resolution (training then reads `mask_ratio` 1), instead of a binary
            mask made at that stride; the mask probabilities can then learn where an edge lies inside a pixel.
        semantic_weight (float): Weight of an auxiliary semantic segmentation loss (Ultralytics' `BCEDiceLoss`, as
            YOLO26 trains its `Proto26.semseg`) on a head over the mask branch's fused P3, which predicts every class's
            union of ground-truth masks; the head is used only in training and removed by `fuse()` (0: no such head).
        focal_alpha, focal_gamma (float): Focal loss constants.
        cls_quality (bool): The focal loss's target at a positive cell is its mask's IoU with the ground truth
            (thresholded at `mask_thr`, at the loss size, not differentiated) instead of 1, so that category scores
            rank the precise masks first (as YOLO's task-aligned targets do for its boxes).
        nms_pre (int): Candidates decoded per image.
        mask_thr (float): Mask probability threshold.
        maskness_power (float): Decoding multiplies each candidate's score by its maskness (the mean probability over
            its mask) to this power: 1 is SOLOv2's rescoring; a higher power ranks precise masks further up (6: chosen
            on held-out validation images, README "Ranking"). Final scores are then put back on SOLOv2's scale
            (`decode.DecodeSettings.score_exponent`), so `conf` keeps its meaning.
        kernel (str): Matrix NMS decay, 'gaussian' or 'linear'.
        sigma (float): Matrix NMS gaussian width.
        filter_thr (float): Predict's minimum score after Matrix NMS.
        vote_thr (float): Mask voting (MNC's, FCIS's): each detection's mask probabilities become the mean of those of
            the candidates of its class whose masks overlap its own with IoU above this, weighted by their scores
            before Matrix NMS; scores and ranking are unchanged (0.7: chosen on held-out validation images, README
            "Mask voting"). 0: off, SOLOv2's masks.
        end2end (dict | None): An end2end export's fixed `conf`, `max_det` and `agnostic` (its metadata only).
    """

    num_grids: tuple[int, ...]
    scale_ranges: tuple[tuple[float, float], ...]
    strides: tuple[int, ...] | None = None
    offsets: bool = False
    offset_bias: tuple[float, float] = (0.0, 0.0)
    transfer_head: bool = True
    pos_scale: float = 0.2
    cls_weight: float = 1.0
    mask_weight: float = 3.0
    bce_weight: float = 0.0
    band_weight: float = 0.0
    loss_stride: int = 4
    coverage_targets: bool = False
    semantic_weight: float = 0.0
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    cls_quality: bool = False
    nms_pre: int = 500
    mask_thr: float = 0.5
    maskness_power: float = 6.0
    kernel: str = "gaussian"
    sigma: float = 2.0
    filter_thr: float = 0.05
    vote_thr: float = 0.7
    end2end: dict | None = None

    @classmethod
    def from_dict(cls, block: dict, source: str = "model YAML") -> SOLOSettings:
        """Read a `solo` block, naming `source` and the key in any error.

        Raises:
            ValueError: For an unknown key, a missing required key or a value of the wrong kind.
        """
        known = {f.name for f in fields(cls)}
        if unknown := sorted(set(block) - known):
            raise ValueError(f"unknown 'solo' key(s) {unknown} in {source}; known keys: {sorted(known)}")
        if missing := [k for k in ("num_grids", "scale_ranges") if k not in block]:
            raise ValueError(f"'solo' block of {source} lacks {missing}")
        values = dict(block)
        try:
            values["num_grids"] = tuple(int(s) for s in block["num_grids"])
            values["scale_ranges"] = tuple((float(lo), float(hi)) for lo, hi in block["scale_ranges"])
            if block.get("strides") is not None:
                values["strides"] = tuple(int(s) for s in block["strides"])
        except (TypeError, ValueError) as e:
            raise ValueError(f"'solo' block of {source}: num_grids, scale_ranges or strides malformed ({e})") from None
        try:
            values["offset_bias"] = tuple(float(v) for v in block.get("offset_bias", (0.0, 0.0)))
        except (TypeError, ValueError):
            values["offset_bias"] = ()
        if len(values["offset_bias"]) != 2:
            raise ValueError(f"'solo' block of {source}: offset_bias must be two numbers: {block['offset_bias']!r}")
        if any(values["offset_bias"]) and not values.get("offsets", False):
            raise ValueError(f"'solo' block of {source}: offset_bias needs offsets: true")
        if len(values["scale_ranges"]) != len(values["num_grids"]):
            raise ValueError(f"'solo' block of {source}: one scale range per grid level is needed")
        if values.get("loss_stride", 4) not in {1, 2, 4}:
            raise ValueError(f"'solo' block of {source}: loss_stride must be 1, 2 or 4: {block['loss_stride']!r}")
        if values.get("kernel", "gaussian") not in {"gaussian", "linear"}:
            raise ValueError(f"'solo' block of {source}: kernel must be 'gaussian' or 'linear': {block['kernel']!r}")
        return cls(**values)

    def as_dict(self) -> dict:
        """The settings as a `solo` block of plain values (None entries left out)."""
        d = asdict(self)
        d["num_grids"], d["scale_ranges"] = list(self.num_grids), [list(r) for r in self.scale_ranges]
        d["offset_bias"] = list(self.offset_bias)
        if self.strides is not None:
            d["strides"] = list(self.strides)
        return {k: v for k, v in d.items() if v is not None}


def settings_from_metadata(metadata: dict) -> SOLOSettings | None:
    """The settings an export carries in its metadata `solo` (ONNX stores metadata values as strings); None if none."""
    solo = metadata.get("solo")
    solo = ast.literal_eval(solo) if isinstance(solo, str) else solo
    return SOLOSettings.from_dict(solo, "the export's metadata") if solo else None

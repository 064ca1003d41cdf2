"""SOLOv2 validator: Ultralytics' segmentation validator and metrics with SOLOv2 decoding."""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path

import torch
from ultralytics.models.yolo.detect import DetectionValidator
from ultralytics.models.yolo.segment import SegmentationValidator
from ultralytics.nn.tasks import load_checkpoint
from ultralytics.utils.metrics import SegmentMetrics

from ultra_solo.utils.labels import naming_non_polygon_rows

from .decode import detections
from .network import decode_settings, decoded_by_solo, solo_decoding
from .resample import upsampled_mask_boxes, upsampled_masks_and_boxes
from .rescale import rescaled_masks
from .settings import SOLO_ARG_DEFAULTS


class SOLOMetrics(SegmentMetrics):
    """Ultralytics' segmentation metrics, with a fitness of mask mAP50-95 alone.

    Ultralytics' segment fitness adds box and mask mAP50-95, and the trainer keeps the epoch with the highest fitness
    as `best.pt`. A SOLO model's boxes are its masks' extents, not a second prediction, so the box term only re-weighs
    the masks by how tight their extremes are: on a fine-tuning run it picked the epoch with the lower mask mAP (README,
    "Fine-tuning from a YOLO-seg checkpoint"). Every metric reported is unchanged.
    """

    @property
    def fitness(self) -> float:
        """Mask mAP50-95: what `best.pt` and early stopping are chosen by."""
        return self.seg.fitness()


class SOLOValidator(SegmentationValidator):
    """Validator for SOLO models: same ground truth, matching and mask/box mAP as YOLO-seg; only `postprocess` differs.

    Decoding keeps detections down to `conf` (0.001), as YOLO's validation does (SOLO's `filter_thr` is a predict
    default), and runs Matrix NMS across classes with `single_cls` or `agnostic_nms`, as YOLO's NMS does. Like the
    trainer, it defaults Ultralytics' arguments as `SOLO_ARG_DEFAULTS` says (`overlap_mask=False`), so `val()` on a
    checkpoint scores against the same full (unoccluded) instance masks as validation during training. Its fitness
    is mask mAP50-95 alone (`SOLOMetrics`).
    """

    def __init__(self, dataloader=None, save_dir=None, args=None, _callbacks: dict | None = None) -> None:
        """Initialise the validator, taking SOLO's defaults for the arguments `args` does not set."""
        if args is None or isinstance(args, dict):
            args = {**SOLO_ARG_DEFAULTS, **(args or {})}
        super().__init__(dataloader, save_dir, args, _callbacks)
        self.metrics = SOLOMetrics()

    def __call__(self, trainer=None, model=None, **kwargs):
        """Validate; the trainer's EMA is marked as read by SOLO's decoding for this validation only."""
        with solo_decoding(trainer.ema.ema) if trainer is not None else nullcontext():
            return super().__call__(trainer, model, **kwargs)

    def get_model(self, model, trainer=None, **kwargs):
        """The model to validate: the trainer's EMA, or this validator's own copy of a model or checkpoint, marked as
        read by SOLO's decoding (`network.decoded_by_solo`) before its first pass (a GPU warm-up)."""
        model = super().get_model(model, trainer, **kwargs)
        if trainer is None:
            weights = model or self.args.model
            if isinstance(weights, (str, Path)) and Path(weights).suffix == ".pt":
                model = load_checkpoint(weights)[0]  # what AutoBackend would load, loaded here to be marked
            decoded_by_solo(model)
        return model

    def build_dataset(self, img_path: str, mode: str = "val", batch: int | None = None):
        """Build Ultralytics' YOLO dataset; label rows that are not polygons are named in the error."""
        with naming_non_polygon_rows(img_path):
            return super().build_dataset(img_path, mode, batch)

    def init_metrics(self, model: torch.nn.Module) -> None:
        """Initialise metrics and read the SOLO inference constants from the model."""
        super().init_metrics(model)
        self.decode = decode_settings(model)

    @property
    def native_masks(self) -> bool:
        """Whether masks are scored at input resolution: Ultralytics' segment validator does so for `save_json` and
        `save_txt` (native-resolution masks for COCO JSON and text labels), else at the mask stride 4."""
        return bool(self.args.save_json or self.args.save_txt)

    def postprocess(self, preds) -> list[dict[str, torch.Tensor]]:
        """Decode the head's dense outputs into one dict per image.

        Returns:
            (list[dict[str, torch.Tensor]]): `bboxes` (n, 4) xyxy in input pixels, `conf` (n,) descending, `cls` (n,)
                and `masks` (n, H/4, W/4), or (n, H, W) with `native_masks`.
        """
        args = self.args
        agnostic = bool(args.single_cls or args.agnostic_nms)
        with_masks = not self.native_masks  # the stride-4 masks decoding made; native masks are upsampled here
        found = detections(preds, self.decode, args.conf, args.max_det, agnostic=agnostic, with_masks=with_masks)
        return [self.image_prediction(*d) for d in found]

    def scale_preds(self, predn: dict[str, torch.Tensor], pbatch: dict) -> dict[str, torch.Tensor]:
        """Scale predictions to the original image size for `save_json`, as Ultralytics' segment validator does: boxes
        by its detection validator, masks by `rescale.rescaled_masks`, bitwise the masks of its `ops.scale_masks` and
        `.byte()` with a fraction of the work (or by Ultralytics itself where that is not sure)."""
        masks = rescaled_masks(predn["masks"], pbatch["ori_shape"], pbatch["ratio_pad"])
        if masks is None:
            return super().scale_preds(predn, pbatch)
        return {**DetectionValidator.scale_preds(self, predn, pbatch), "masks": masks}

    def image_prediction(
        self, probs: torch.Tensor, conf: torch.Tensor, cls: torch.Tensor, masks: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """One image's prediction dict from its mask probabilities (n, H/4, W/4), scores and classes, and (without
        `native_masks`) its bool masks (n, H/4, W/4)."""
        size = [4 * x for x in probs.shape[1:]]  # input size: masks are at the mask-feature stride 4
        if self.native_masks:
            masks, boxes = upsampled_masks_and_boxes(probs, size, self.decode.mask_thr)  # (n, H, W), (n, 4)
        else:
            boxes = upsampled_mask_boxes(probs, size, self.decode.mask_thr, masks)  # boxes of the (n, H, W) masks
        return {"bboxes": boxes, "conf": conf, "cls": cls.float(), "masks": masks}

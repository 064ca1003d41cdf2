"""SOLOv2 validator: Ultralytics' segmentation validator and metrics with SOLOv2 decoding."""

from __future__ import annotations

import torch
from ultralytics.models.yolo.segment import SegmentationValidator
from ultralytics.utils import ops

from ultra_solo.utils.labels import naming_non_polygon_rows

from .network import solo_config
from .postprocess import DecodeSettings, detections, mask_boxes, upsample_masks, upsampled_mask_boxes


class SOLOValidator(SegmentationValidator):
    """Validator for SOLO models: same ground truth, matching and mask/box mAP as YOLO-seg; only `postprocess` differs.

    Decoding keeps detections down to `conf` (0.001), as YOLO's validation does (SOLO's `filter_thr` is a predict
    default), and runs Matrix NMS across classes with `single_cls` or `agnostic_nms`, as YOLO's NMS does. Like the
    trainer, it builds ground-truth masks with `overlap_mask=False` unless told otherwise, so `val()` on a checkpoint
    scores against the same full (unoccluded) instance masks as validation during training.
    """

    decodes_solo = True  # SOLO models refuse eval passes for other decoders (`network.check_decoder`)

    def __init__(self, dataloader=None, save_dir=None, args=None, _callbacks: dict | None = None) -> None:
        """Initialise the validator, defaulting `overlap_mask` to False when `args` does not set it."""
        if args is None or isinstance(args, dict):
            args = {"overlap_mask": False, **(args or {})}
        super().__init__(dataloader, save_dir, args, _callbacks)

    def build_dataset(self, img_path: str, mode: str = "val", batch: int | None = None):
        """Build Ultralytics' YOLO dataset; label rows that are not polygons are named in the error."""
        with naming_non_polygon_rows(img_path):
            return super().build_dataset(img_path, mode, batch)

    def init_metrics(self, model: torch.nn.Module) -> None:
        """Initialise metrics and read the SOLO inference constants from the model."""
        super().init_metrics(model)
        self.decode = DecodeSettings.from_solo(solo_config(model))

    def postprocess(self, preds) -> list[dict[str, torch.Tensor]]:
        """Decode the head's dense outputs into one dict per image.

        Returns:
            (list[dict[str, torch.Tensor]]): `bboxes` (n, 4) xyxy in input pixels, `conf` (n,) descending, `cls` (n,)
                and `masks` (n, H/4, W/4), or (n, H, W) when `save_json`/`save_txt` asks for native resolution.
        """
        native = self.process is ops.process_mask_native
        agnostic = bool(self.args.single_cls or self.args.agnostic_nms)
        out = []
        for probs, conf, cls in detections(preds, self.decode, self.args.conf, self.args.max_det, agnostic=agnostic):
            size = [4 * x for x in probs.shape[1:]]  # input size: masks are at the mask-feature stride 4
            if native:
                masks = upsample_masks(probs, size, self.decode.mask_thr)  # (n, H, W)
                boxes = mask_boxes(masks)
            else:
                masks = probs > self.decode.mask_thr  # (n, H/4, W/4)
                boxes = upsampled_mask_boxes(probs, size, self.decode.mask_thr)  # boxes of the (n, H, W) masks
            out.append({"bboxes": boxes, "conf": conf, "cls": cls.float(), "masks": masks})
        return out

"""COCO evaluation of the validator's own predictions: mask AP (overall and by object size) and Boundary AP.

One library, faster-coco-eval (what Ultralytics itself uses for COCO evaluation), scores both from the same
`predictions.json` and the same ground truth, built here from the YOLO labels: `segm` gives COCO mask AP and AP by
object size, `boundary` gives Boundary AP (Cheng et al., "Boundary IoU", CVPR 2021: the IoU of each detection is the
smaller of its mask IoU and the IoU of the two masks' boundary bands, 2% of the image diagonal wide).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
from faster_coco_eval import COCO, COCOeval_faster
from faster_coco_eval.core import mask as mask_utils
from ultralytics.data import YOLODataset

METRICS = {  # summary column -> (iouType, index in COCOeval's stats)
    "coco_mask_mAP50-95": ("segm", 0),
    "coco_mask_mAP50": ("segm", 1),
    "coco_mask_mAP75": ("segm", 2),
    "mask_mAP_small": ("segm", 3),
    "mask_mAP_medium": ("segm", 4),
    "mask_mAP_large": ("segm", 5),
    "boundary_mAP50-95": ("boundary", 0),
    "boundary_mAP50": ("boundary", 1),
}


def with_coco_predictions(validator_cls: type) -> type:
    """Return a subclass of an Ultralytics segmentation validator that also writes `predictions.json`.

    It turns `save_json` on, so Ultralytics scores masks at native resolution and writes the COCO-format predictions
    (RLE masks in original-image pixels), which `coco_metrics` evaluates.
    """

    class COCOPredictions(validator_cls):
        def init_metrics(self, model) -> None:
            self.args.save_json = True  # before Ultralytics picks the native-resolution mask processing for it
            super().init_metrics(model)

    COCOPredictions.__name__ = f"COCOPredictions{validator_cls.__name__}"
    return COCOPredictions


def polygon_annotation(segment: np.ndarray, h: int, w: int) -> dict:
    """A COCO annotation (segmentation, bbox, area) for one normalised polygon (n, 2) of an h x w image."""
    xy = segment * [w, h]
    rle = mask_utils.merge(mask_utils.frPyObjects([xy.reshape(-1).tolist()], h, w))
    x1, y1 = xy.min(0)
    x2, y2 = xy.max(0)
    return {
        "segmentation": [xy.reshape(-1).round(2).tolist()],
        "bbox": [float(x1), float(y1), float(x2 - x1), float(y2 - y1)],
        "area": float(mask_utils.area(rle)),
        "iscrowd": 0,
    }


def ground_truth(dataset: YOLODataset, names: dict[int, str]) -> dict:
    """COCO ground truth of a YOLO-seg dataset: images, polygon annotations (category = class + 1), categories."""
    images, annotations = [], []
    for image_id, label in enumerate(dataset.labels):
        h, w = label["shape"]
        images.append({"id": image_id, "file_name": Path(label["im_file"]).name, "height": h, "width": w})
        for cls, segment in zip(label["cls"].reshape(-1), label["segments"]):
            ann = polygon_annotation(segment, h, w)
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": int(cls) + 1, **ann})
    categories = [{"id": i + 1, "name": name} for i, name in names.items()]
    return {"images": images, "annotations": annotations, "categories": categories}


def coco_metrics(gt: dict, predictions: list[dict]) -> dict[str, float | None]:
    """`METRICS` of predictions (COCO results with RLE masks), matched to `gt` images by file name.

    A size class without ground-truth objects gets None (COCO's -1), not an AP.
    """
    ids = {im["file_name"]: im["id"] for im in gt["images"]}
    dets = [{**p, "image_id": ids[p["file_name"]]} for p in predictions if p["file_name"] in ids]
    if not dets:
        return dict.fromkeys(METRICS, 0.0)
    coco = COCO(gt)
    stats, log = {}, logging.getLogger(__name__).debug  # faster-coco-eval prints its summary through print_function
    for iou_type in ("segm", "boundary"):
        evaluator = COCOeval_faster(coco, coco.loadRes(dets), iou_type, print_function=log)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
        stats[iou_type] = evaluator.stats
    values = {k: float(stats[t][i]) for k, (t, i) in METRICS.items()}
    return {k: v if v >= 0 else None for k, v in values.items()}  # COCO's -1: no ground truth of that size


def coco_metrics_from_file(gt: dict, file: Path) -> dict[str, float | None]:
    """`coco_metrics` of a validator's `predictions.json` (missing file: no predictions)."""
    return coco_metrics(gt, json.loads(file.read_text()) if file.is_file() else [])

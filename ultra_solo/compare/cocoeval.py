"""pycocotools `segm` evaluation of the validator's own predictions, with ground truth built from the YOLO labels."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from ultralytics.data import YOLODataset
from ultralytics.utils import ops


def with_coco_predictions(validator_cls: type) -> type:
    """Return a subclass of an Ultralytics segmentation validator that also writes `predictions.json`.

    It scores masks at native resolution (as `save_json` does) and lets Ultralytics write the COCO-format predictions
    (RLE masks in original-image pixels); the faster-coco-eval check `save_json` triggers at start-up is skipped, as
    pycocotools evaluates them here.
    """

    class COCOPredictions(validator_cls):
        def init_metrics(self, model) -> None:
            super().init_metrics(model)
            self.args.save_json = True
            self.process = ops.process_mask_native

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


def segm_ap(gt: dict, predictions: list[dict]) -> dict[str, float]:
    """pycocotools `segm` AP (IoU 0.50:0.95) and AP50 of predictions, matched to `gt` images by file name."""
    ids = {im["file_name"]: im["id"] for im in gt["images"]}
    dets = [{**p, "image_id": ids[p["file_name"]]} for p in predictions if p["file_name"] in ids]
    if not dets:
        return {"AP": 0.0, "AP50": 0.0}
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress and summary
        coco = COCO()
        coco.dataset = gt
        coco.createIndex()
        evaluator = COCOeval(coco, coco.loadRes(dets), "segm")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return {"AP": float(evaluator.stats[0]), "AP50": float(evaluator.stats[1])}


def segm_ap_from_file(gt: dict, file: Path) -> dict[str, float]:
    """`segm_ap` of a validator's `predictions.json` (missing file: no predictions)."""
    return segm_ap(gt, json.loads(file.read_text()) if file.is_file() else [])

"""COCO evaluation of the validator's own predictions: mask AP (overall and by object size) and Boundary AP.

One library, faster-coco-eval (what Ultralytics itself uses for COCO evaluation), scores both from the same
`predictions.json` and the same ground truth, built here from the YOLO labels: `segm` gives COCO mask AP and AP by
object size, `boundary` gives Boundary AP (Cheng et al., "Boundary IoU", CVPR 2021: the IoU of each detection is the
smaller of its mask IoU and the IoU of the two masks' boundary bands, 2% of the image diagonal wide).
"""

from __future__ import annotations

import copy
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


def class_names(data: dict, single_cls: bool = False) -> dict[int, str]:
    """The class names the validator scores with: the data set's, or with `single_cls` one class named "item", as
    Ultralytics' trainer names it (every prediction and every object is then of class 0)."""
    return {0: "item"} if single_cls else data["names"]


def val_dataset(data: dict, single_cls: bool = False) -> YOLODataset:
    """The val split of a checked data dict as the validator reads it: with `single_cls` every object is of class 0."""
    return YOLODataset(img_path=data["val"], data=data, task="segment", augment=False, single_cls=single_cls)


class COCOScores:
    """One model's COCO evaluation (`segm` and `boundary`) of a ground truth, kept per image so that its `METRICS`
    can be recomputed over any multiset of the images (a bootstrap resample) without matching anything again.

    faster-coco-eval matches detections to ground truth image by image (`evaluate`, with `separate_eval`) and only then
    accumulates the matches into precision / recall (`accumulate`): accumulating a resample's per-image matches, an
    image drawn twice counting twice, scores exactly what the evaluator would on a data set holding those images.
    """

    def __init__(self, gt: dict, predictions: list[dict]):
        """Match `predictions` (COCO results with RLE masks, images by file name) to `gt`, image by image."""
        ids = {im["file_name"]: im["id"] for im in gt["images"]}
        dets = scored_detections([{**p, "image_id": ids[p["file_name"]]} for p in predictions if p["file_name"] in ids])
        self.n_images = len(gt["images"])
        self.evaluators = {}  # iouType -> evaluated COCOeval_faster; none without detections (every metric 0)
        if dets:
            coco = COCO(gt)
            log = logging.getLogger(__name__).debug  # faster-coco-eval prints its summary through print_function
            for iou_type in ("segm", "boundary"):
                evaluator = COCOeval_faster(coco, coco.loadRes(dets), iou_type, print_function=log, separate_eval=True)
                evaluator.evaluate()
                self.evaluators[iou_type] = evaluator

    def metrics(self, images: np.ndarray | None = None) -> dict[str, float | None]:
        """`METRICS` over `images` (indices into the ground truth's images, repeats allowed; default: all once).

        A size class without ground-truth objects among `images` gets None (COCO's -1), not an AP.
        """
        if not self.evaluators:
            return dict.fromkeys(METRICS, 0.0)
        stats = {t: self.resampled(e, images).stats for t, e in self.evaluators.items()}
        values = {k: float(stats[t][i]) for k, (t, i) in METRICS.items()}
        return {k: v if v >= 0 else None for k, v in values.items()}

    @staticmethod
    def resampled(evaluator: COCOeval_faster, images: np.ndarray | None) -> COCOeval_faster:
        """A copy of an evaluated `evaluator` accumulated and summarised over `images` only (all when None), and over
        the object sizes only where `METRICS` read them (accumulating a size costs as much as all objects)."""
        params, per_image = evaluator._paramsEval, evaluator._evalImgs_cpp  # per_image: [category][area][image]
        n, n_areas = len(params.imgIds), len(params.areaRng)
        images = np.arange(n) if images is None else np.asarray(images)
        by_size = any(i >= 3 for t, i in METRICS.values() if t == params.iouType)  # stats 3-5: AP small/medium/large
        areas = range(n_areas) if by_size else [params.areaRngLbl.index("all")]
        resample = copy.copy(evaluator)
        resample.params = resample._paramsEval = copy.copy(params)  # accumulate reads the one, summarize the other
        resample.params.imgIds = [params.imgIds[i] for i in images]
        resample.params.areaRng = [params.areaRng[a] for a in areas]
        resample.params.areaRngLbl = [params.areaRngLbl[a] for a in areas]
        blocks = [(k * n_areas + a) * n for k in range(len(per_image) // (n_areas * n)) for a in areas]
        resample._evalImgs_cpp = [per_image[b + i] for b in blocks for i in images]
        resample.accumulate()
        resample.summarize()
        return resample


def scored_detections(dets: list[dict], max_dets: int = 100) -> list[dict]:
    """The detections COCO evaluation scores: the `max_dets` highest-scoring of each image and category, in their order.

    COCOeval keeps exactly these (a stable sort by score, then its largest maxDets); dropping the rest first spares
    computing their boundaries, most of the evaluation's time at the validator's conf 0.001 and max_det 300.
    """
    groups: dict[tuple, list[int]] = {}
    for i, d in enumerate(dets):
        groups.setdefault((d["image_id"], d["category_id"]), []).append(i)
    kept = [i for group in groups.values() for i in sorted(group, key=lambda i: -dets[i]["score"])[:max_dets]]
    return [dets[i] for i in sorted(kept)]


def coco_metrics(gt: dict, predictions: list[dict]) -> dict[str, float | None]:
    """`METRICS` of predictions (COCO results with RLE masks), matched to `gt` images by file name.

    A size class without ground-truth objects gets None (COCO's -1), not an AP.
    """
    return COCOScores(gt, predictions).metrics()


def coco_scores_from_file(gt: dict, file: Path) -> COCOScores:
    """`COCOScores` of a validator's `predictions.json` (missing file: no predictions)."""
    return COCOScores(gt, json.loads(file.read_text()) if file.is_file() else [])


def coco_metrics_from_file(gt: dict, file: Path) -> dict[str, float | None]:
    """`coco_metrics` of a validator's `predictions.json` (missing file: no predictions)."""
    return coco_scores_from_file(gt, file).metrics()

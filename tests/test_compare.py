"""`ultra-solo compare`: argument identity, outputs of a tiny two-model run, resumability, COCO / Boundary AP."""

from __future__ import annotations

from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch
from faster_coco_eval.core import mask as mask_utils
from ultralytics.data import YOLODataset
from ultralytics.data.utils import check_det_dataset
from ultralytics.utils import YAML

from ultra_solo.compare import compare
from ultra_solo.compare.args import ArgumentMismatchError, SeedsError, absolute_file, check_same_args
from ultra_solo.compare.cocoeval import class_names, coco_metrics, ground_truth, val_dataset
from ultra_solo.compare.pictures import best_matches
from ultra_solo.compare.speed import inference_latency

from .conftest import NO_AUGMENT

TINY = dict(epochs=1, imgsz=64, batch=4, seed=0, workers=0, latency_images=2, **NO_AUGMENT)


def test_identity_check_names_the_differing_key(tmp_path):
    base = {"model": "a.yaml", "name": "a", "save_dir": "runs/a", "epochs": 10, "mosaic": 1.0}
    YAML.save(tmp_path / "a.yaml", base)
    YAML.save(tmp_path / "b.yaml", {**base, "model": "b.yaml", "name": "b", "save_dir": "runs/b"})
    assert check_same_args({"a": tmp_path / "a.yaml", "b": tmp_path / "b.yaml"})["mosaic"] == 1.0
    YAML.save(tmp_path / "b.yaml", {**base, "model": "b.yaml", "mosaic": 0.0})
    with pytest.raises(ArgumentMismatchError, match="'mosaic'"):
        check_same_args({"a": tmp_path / "a.yaml", "b": tmp_path / "b.yaml"})


def test_identity_check_takes_one_file_spelled_two_ways(tmp_path, monkeypatch):
    data = tmp_path / "data.yaml"
    data.write_text("names: [a]\n")
    base = {"model": "a.yaml", "epochs": 10}
    YAML.save(tmp_path / "a.yaml", {**base, "data": str(data)})
    YAML.save(tmp_path / "b.yaml", {**base, "data": "data.yaml"})  # the same file, relative to the working directory
    monkeypatch.chdir(tmp_path)
    assert check_same_args({"a": tmp_path / "a.yaml", "b": tmp_path / "b.yaml"})["epochs"] == 10
    (tmp_path / "other.yaml").write_text("names: [b]\n")
    YAML.save(tmp_path / "b.yaml", {**base, "data": "other.yaml"})
    with pytest.raises(ArgumentMismatchError, match="'data'"):
        check_same_args({"a": tmp_path / "a.yaml", "b": tmp_path / "b.yaml"})
    assert absolute_file("data.yaml") == str(data.resolve()) and absolute_file("coco8-seg.yaml") == "coco8-seg.yaml"


@pytest.fixture(scope="module")
def compared(coco8, tmp_path_factory):
    project = tmp_path_factory.mktemp("compare")
    return compare(data=str(coco8), models="yolo11n-seg.yaml,yolo11n-solo.yaml", project=project, **TINY)


class StageClock:
    """A stand-in model whose predict stages take the times it is given and which logs every call."""

    def __init__(self, name: str, log: list, times: list[float]):
        self.name, self.log, self.times = name, log, iter(times)

    def predict(self, image, **kwargs):
        self.log.append((self.name, image))
        t = next(self.times)
        return [SimpleNamespace(speed={"preprocess": 1.0, "inference": t, "postprocess": 2.0})]


def test_models_take_turns_on_every_image():
    log = []
    models = {"a": StageClock("a", log, [0, 10, 20, 30, 40]), "b": StageClock("b", log, [0, 1, 2, 3, 100])}
    latency = inference_latency(models, ["x.jpg", "y.jpg"], imgsz=64, repeats=2)
    assert log[2:] == [(m, i) for _ in range(2) for i in ("x.jpg", "y.jpg") for m in ("a", "b")]  # after warm-ups
    assert latency["a"] == {"preprocess": 1.0, "inference": 25.0, "postprocess": 2.0, "total": 28.0}
    assert latency["b"]["inference"] == 2.5 and latency["b"]["total"] == 5.5  # median: one slow pass does not count


def test_report_summary_curves_and_picture(compared):
    report = (compared / "report.md").read_text()
    for text in ("yolo11n-seg.yaml", "yolo11n-solo.yaml", "mask mAP50-95", "latency ms", "train img/s", "| seed | 0 |",
                 "GFLOPs@64", "boundary mAP50-95", "![predictions](predictions.jpg)"):  # fmt: skip
        assert text in report, text
    header, *rows = (compared / "summary.csv").read_text().splitlines()
    new = ["weights", "coco_mask_mAP75", "boundary_mAP50-95", "boundary_mAP50", "mask_mAP_small", "mask_mAP_medium"]
    assert len(rows) == 2 and set(new) <= set(header.split(",")) and "metrics/mAP50-95(M)" in header
    assert all(row.split(",")[header.split(",").index("weights")] == "scratch" for row in rows)
    assert (compared / "curves.png").stat().st_size > 10_000
    picture = cv2.imread(str(compared / "predictions.jpg"))
    assert picture.shape[0] >= 4 * 360 and picture.shape[1] > 3 * 360  # 4 images x (ground truth + 2 models)
    for run in ("yolo11n-seg", "yolo11n-solo"):
        args = YAML.load(compared / run / "args.yaml")
        assert args["overlap_mask"] is True and args["mosaic"] == 0.0  # the one shared argument set


def test_report_gives_every_difference_a_bootstrap_interval(compared):
    report = (compared / "report.md").read_text()
    assert "## Differences over the validation images (paired bootstrap)" in report
    assert "### yolo11n-solo.yaml minus yolo11n-seg.yaml\n" in report and "on the 4 validation images" in report
    verdicts = ("higher than yolo11n-seg.yaml", "lower than yolo11n-seg.yaml", "no difference shown")
    for metric in ("COCO mask mAP50-95", "boundary mAP50-95"):
        row = next(line for line in report.splitlines() if line.startswith(f"| {metric} | "))
        cells = row.split(" | ")
        low, high = (float(x) for x in cells[4].strip("[]").split(", "))
        assert low <= high and any(v in cells[5] for v in verdicts), row


def test_trained_models_are_not_retrained(compared, coco8):
    best = compared / "yolo11n-solo" / "weights" / "best.pt"
    before = best.stat().st_mtime_ns
    compare(data=str(coco8), models="yolo11n-seg.yaml,yolo11n-solo.yaml", project=compared.parent, **TINY)
    assert best.stat().st_mtime_ns == before


def test_a_run_with_other_arguments_is_refused(compared, coco8):
    with pytest.raises(ArgumentMismatchError, match="'mosaic'"):
        compare(data=str(coco8), models="yolo11n-seg.yaml,yolo11n-solo.yaml", project=compared.parent,
                **{**TINY, "mosaic": 1.0})  # fmt: skip


def test_seeds_train_every_model_once_per_seed_and_report_paired_intervals(coco8, tmp_path):
    models = "yolo11n-seg.yaml,yolo11n-solo.yaml"
    no_seed = {k: v for k, v in TINY.items() if k != "seed"}
    with pytest.raises(SeedsError, match="not both"):
        compare(data=str(coco8), models=models, project=tmp_path, seeds="0,1", **TINY)
    folder = compare(data=str(coco8), models=models, project=tmp_path, seeds="0,1", cocoeval=False, picture_images=0,
                     **{**no_seed, "latency_images": 1})  # fmt: skip
    for model in ("yolo11n-seg", "yolo11n-solo"):
        for seed in (0, 1):
            assert YAML.load(folder / f"{model}-seed{seed}" / "args.yaml")["seed"] == seed
    header, *rows = (folder / "summary.csv").read_text().splitlines()
    cols = header.split(",")
    assert [(r.split(",")[0], r.split(",")[cols.index("seed")]) for r in rows] == [
        ("yolo11n-seg.yaml", "0"), ("yolo11n-seg.yaml", "1"), ("yolo11n-solo.yaml", "0"), ("yolo11n-solo.yaml", "1")
    ]  # fmt: skip
    report = (folder / "report.md").read_text()
    assert "## Over seeds" in report
    assert "### yolo11n-solo.yaml minus yolo11n-seg.yaml, paired by seed (2 seeds: 0, 1)" in report
    assert report.startswith("# Comparison: yolo11n-seg.yaml, yolo11n-solo.yaml\n")
    assert "- seed: one per run (the seed column)" in report
    verdicts = ("higher than yolo11n-seg.yaml", "lower than yolo11n-seg.yaml", "no difference shown")
    rows = [line for line in report.splitlines() if line.startswith("| mask mAP50-95 |")]
    assert len(rows) == 1 and any(v in rows[0] for v in verdicts)


def ground_truth_predictions(gt: dict) -> list[dict]:
    """The ground truth of `gt` as COCO results with RLE masks and score 1."""
    files = {im["id"]: im for im in gt["images"]}
    predictions = []
    for ann in gt["annotations"]:
        im = files[ann["image_id"]]
        rle = mask_utils.merge(mask_utils.frPyObjects(ann["segmentation"], im["height"], im["width"]))
        rle["counts"] = rle["counts"].decode()
        predictions.append({"file_name": im["file_name"], "category_id": ann["category_id"], "score": 1.0,
                            "bbox": ann["bbox"], "segmentation": rle})  # fmt: skip
    return predictions


def test_coco_metrics_of_ground_truth_are_perfect(coco8):
    data = check_det_dataset(str(coco8))
    gt = ground_truth(YOLODataset(img_path=data["val"], data=data, task="segment", augment=False), data["names"])
    predictions = ground_truth_predictions(gt)
    assert len(predictions) == 17
    metrics = coco_metrics(gt, predictions)
    for key in ("coco_mask_mAP50-95", "coco_mask_mAP50", "boundary_mAP50-95", "mask_mAP_small", "mask_mAP_large"):
        assert metrics[key] > 0.99, key
    assert coco_metrics(gt, [])["boundary_mAP50-95"] == 0.0


def test_single_cls_ground_truth_has_one_class(coco8):
    """`compare ... single_cls=True`: the validator scores every prediction as class 0, so every object is of it."""
    data = check_det_dataset(str(coco8))
    gt = ground_truth(val_dataset(data), class_names(data))
    val_set = val_dataset(data, single_cls=True)
    single = ground_truth(val_set, class_names(data, single_cls=True))
    assert len({a["category_id"] for a in gt["annotations"]}) > 1 and len(val_set) == 4
    assert single["categories"] == [{"id": 1, "name": "item"}]
    assert [a["category_id"] for a in single["annotations"]] == [1] * len(gt["annotations"])
    assert coco_metrics(single, ground_truth_predictions(single))["coco_mask_mAP50-95"] > 0.99


def rle(mask: np.ndarray) -> dict:
    """COCO RLE of a binary mask, with string counts as in predictions.json."""
    encoded = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {**encoded, "counts": encoded["counts"].decode()}


def test_boundary_ap_of_a_known_boundary_error():
    """A 100 x 100 square predicted 2 px to the right, in a 200 x 200 image.

    Mask IoU = 98 / 102 = 0.961: above every threshold 0.50-0.95, mask AP 1. Boundary bands are round(0.02 * 282.8) = 6
    px wide: ground truth [50,150)^2 minus [56,144)^2, 2256 px; their intersection is the squares' overlap
    (100 x 98 = 9800) minus the union of the inner squares (88 x 90 = 7920) = 1880, the union 2 x 2256 - 1880 = 2632,
    Boundary IoU = 1880 / 2632 = 0.714. The detection's IoU is min(0.961, 0.714): it passes 5 of 10 thresholds.
    """
    square = np.zeros((200, 200), np.uint8)
    square[50:150, 50:150] = 1
    gt = {
        "images": [{"id": 0, "file_name": "a.jpg", "height": 200, "width": 200}],
        "annotations": [{"id": 1, "image_id": 0, "category_id": 1, "segmentation": rle(square),
                         "bbox": [50, 50, 100, 100], "area": 10000.0, "iscrowd": 0}],
        "categories": [{"id": 1, "name": "square"}],
    }  # fmt: skip
    shifted = np.roll(square, 2, axis=1)
    found = {"file_name": "a.jpg", "category_id": 1, "score": 0.9, "bbox": [52, 50, 100, 100]}
    found["segmentation"] = rle(shifted)
    metrics = coco_metrics(gt, [found])
    assert metrics["coco_mask_mAP50-95"] == pytest.approx(1.0) and metrics["mask_mAP_large"] == pytest.approx(1.0)
    assert metrics["boundary_mAP50-95"] == pytest.approx(0.5) and metrics["boundary_mAP50"] == pytest.approx(1.0)
    assert metrics["mask_mAP_small"] is None and metrics["mask_mAP_medium"] is None  # no such ground truth


def test_mask_ap_equals_pycocotools(coco8):
    """faster-coco-eval's `segm` AP is pycocotools' on the same imperfect predictions (it replaces it here)."""
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    data = check_det_dataset(str(coco8))
    gt = ground_truth(YOLODataset(img_path=data["val"], data=data, task="segment", augment=False), data["names"])
    ids = {im["file_name"]: im["id"] for im in gt["images"]}
    rng = np.random.default_rng(0)
    predictions = []
    for p in ground_truth_predictions(gt):
        mask = mask_utils.decode(p["segmentation"])
        mask = np.roll(mask, int(rng.integers(-6, 7)), axis=int(rng.integers(0, 2)))  # boundary errors
        predictions.append({**p, "score": float(rng.random()), "segmentation": rle(mask)})
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = gt
        coco.createIndex()
        reference = COCOeval(coco, coco.loadRes([{**p, "image_id": ids[p["file_name"]]} for p in predictions]), "segm")
        reference.evaluate()
        reference.accumulate()
        reference.summarize()
    metrics = coco_metrics(gt, predictions)
    assert 0.2 < metrics["coco_mask_mAP50-95"] < 0.95
    assert metrics["coco_mask_mAP50-95"] == pytest.approx(reference.stats[0], abs=1e-6)
    assert metrics["coco_mask_mAP50"] == pytest.approx(reference.stats[1], abs=1e-6)
    assert metrics["coco_mask_mAP75"] == pytest.approx(reference.stats[2], abs=1e-6)
    assert metrics["mask_mAP_small"] == pytest.approx(reference.stats[3], abs=1e-6)


def test_best_matches_by_mask_iou():
    gt = torch.zeros(2, 4, 4, dtype=torch.bool)
    gt[0, :2, :2], gt[1, 2:, 2:] = True, True  # 4 px each
    pred = torch.zeros(3, 4, 4, dtype=torch.bool)
    pred[0, :2, :3], pred[1, 2:, 3:], pred[2] = True, True, True  # 6 px over gt 0, 2 px inside gt 1, everything
    best, iou = best_matches(gt, pred)
    assert best.tolist() == [0, 1] and iou.tolist() == pytest.approx([4 / 6, 2 / 4])  # the whole image: 4 / 16
    assert [len(t) for t in best_matches(gt, pred[:0])] == [0, 0]

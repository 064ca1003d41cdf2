"""`ultra-solo compare`: argument identity, outputs of a tiny two-model run, resumability, COCOeval path."""

from __future__ import annotations

import pytest
from pycocotools import mask as mask_utils
from ultralytics.data import YOLODataset
from ultralytics.data.utils import check_det_dataset
from ultralytics.utils import YAML

from ultra_solo.compare import compare
from ultra_solo.compare.args import ArgumentMismatchError, check_same_args
from ultra_solo.compare.cocoeval import ground_truth, segm_ap

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


@pytest.fixture(scope="module")
def compared(coco8, tmp_path_factory):
    project = tmp_path_factory.mktemp("compare")
    folder = compare(data=str(coco8), models="yolo11n-seg.yaml,solov2-n.yaml", project=project, cocoeval=True, **TINY)
    return folder


def test_report_summary_and_curves(compared):
    report = (compared / "report.md").read_text()
    for text in ("yolo11n-seg.yaml", "solov2-n.yaml", "mask mAP50-95", "latency ms", "train img/s", "| seed | 0 |"):
        assert text in report
    rows = (compared / "summary.csv").read_text().splitlines()
    assert len(rows) == 3 and "metrics/mAP50-95(M)" in rows[0] and "coco/segm_AP" in rows[0]
    assert (compared / "curves.png").stat().st_size > 10_000
    for run in ("yolo11n-seg", "solov2-n"):
        args = YAML.load(compared / run / "args.yaml")
        assert args["overlap_mask"] is True and args["mosaic"] == 0.0  # the one shared argument set


def test_trained_models_are_not_retrained(compared, coco8):
    best = compared / "solov2-n" / "weights" / "best.pt"
    before = best.stat().st_mtime_ns
    compare(data=str(coco8), models="yolo11n-seg.yaml,solov2-n.yaml", project=compared.parent, **TINY)
    assert best.stat().st_mtime_ns == before


def test_a_run_with_other_arguments_is_refused(compared, coco8):
    with pytest.raises(ArgumentMismatchError, match="'mosaic'"):
        compare(data=str(coco8), models="yolo11n-seg.yaml,solov2-n.yaml", project=compared.parent,
                **{**TINY, "mosaic": 1.0})  # fmt: skip


def test_cocoeval_of_ground_truth_is_perfect(coco8):
    data = check_det_dataset(str(coco8))
    gt = ground_truth(YOLODataset(img_path=data["val"], data=data, task="segment", augment=False), data["names"])
    files = {im["id"]: im for im in gt["images"]}
    predictions = []
    for ann in gt["annotations"]:
        im = files[ann["image_id"]]
        rle = mask_utils.merge(mask_utils.frPyObjects(ann["segmentation"], im["height"], im["width"]))
        rle["counts"] = rle["counts"].decode()
        predictions.append({"file_name": im["file_name"], "category_id": ann["category_id"], "score": 1.0,
                            "bbox": ann["bbox"], "segmentation": rle})  # fmt: skip
    assert len(predictions) == 17
    ap = segm_ap(gt, predictions)
    assert ap["AP"] > 0.99 and ap["AP50"] > 0.99
    assert segm_ap(gt, [])["AP"] == 0.0

"""SOLO models must learn: yolo11n-solo and solov2-n on coco8-seg's 4 train images, scored on them."""

from __future__ import annotations

from pathlib import Path

from ultra_solo import SOLO

from .conftest import LEARNED_MASK_MAP50, SOLOV2_RECIPE


def test_yolo11n_solo_learns_coco8(overfit):
    _, metrics = overfit
    print(f"mask mAP50 {metrics.seg.map50:.3f} mAP50-95 {metrics.seg.map:.3f}, box mAP50 {metrics.box.map50:.3f}")
    assert metrics.seg.map50 >= LEARNED_MASK_MAP50


def test_trained_model_predicts_masks(overfit, coco8):
    model, _ = overfit
    results = model.predict(coco8.parent / "images" / "train", imgsz=160, retina_masks=True)
    by_name = {Path(r.path).name: r for r in results}
    zebra = by_name["000000000034.jpg"]  # one zebra
    assert zebra.masks is not None and zebra.masks.data.shape[1:] == zebra.orig_shape
    assert model.names[int(zebra.boxes.cls[0])] == "zebra" and zebra.boxes.conf[0] >= 0.25
    assert sum(len(r.boxes) for r in results) >= 4


def test_solov2_learns_coco8(coco8_train_as_val, tmp_path):
    metrics = SOLO("solov2-n.yaml").train(data=str(coco8_train_as_val), project=str(tmp_path), **SOLOV2_RECIPE)
    print(f"mask mAP50 {metrics.seg.map50:.3f} mAP50-95 {metrics.seg.map:.3f}, box mAP50 {metrics.box.map50:.3f}")
    assert metrics.seg.map50 >= 0.5

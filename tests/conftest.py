"""Shared fixtures: an offline Ultralytics environment and the real datasets in ../shared/datasets."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest

# Before Ultralytics is imported: no network, no auto-install, settings and font in a private folder.
_CONFIG_DIR = Path(tempfile.mkdtemp(prefix="ultra-solo-tests-"))
atexit.register(shutil.rmtree, _CONFIG_DIR, ignore_errors=True)
os.environ.update(YOLO_OFFLINE="1", YOLO_AUTOINSTALL="0", YOLO_CONFIG_DIR=str(_CONFIG_DIR))


def _install_font() -> None:
    """Give Ultralytics' plots a font so that `check_font` never tries to download Arial."""
    import matplotlib

    font = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    (_CONFIG_DIR / "Ultralytics").mkdir(parents=True, exist_ok=True)
    shutil.copy(font, _CONFIG_DIR / "Ultralytics" / "Arial.ttf")


_install_font()

DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"
NO_AUGMENT = dict(
    mosaic=0.0,
    mixup=0.0,
    cutmix=0.0,
    copy_paste=0.0,
    hsv_h=0.0,
    hsv_s=0.0,
    hsv_v=0.0,
    degrees=0.0,
    translate=0.0,
    scale=0.0,
    shear=0.0,
    perspective=0.0,
    flipud=0.0,
    fliplr=0.0,
    erasing=0.0,
)


@pytest.fixture(scope="session")
def coco8() -> Path:
    """The coco8-seg data.yaml (4 train, 4 val images, 80 classes)."""
    yaml = DATASETS / "coco8-seg" / "data.yaml"
    assert yaml.is_file(), f"{yaml} is missing: the tests need ../shared/datasets beside the repository"
    return yaml


@pytest.fixture(scope="session")
def coco8_train_as_val(coco8: Path, tmp_path_factory) -> Path:
    """A data.yaml that trains and validates on coco8-seg's 4 train images."""
    from ultralytics.utils import YAML

    names = YAML.load(coco8)["names"]
    yaml = tmp_path_factory.mktemp("data") / "coco8-train.yaml"
    YAML.save(yaml, {"path": str(coco8.parent), "train": "images/train", "val": "images/train", "names": names})
    return yaml


LEARN_RECIPE = dict(  # yolo11n-solo learns coco8-seg's 4 train images; ~2.5 min on the 2-core CI machine
    epochs=300,  # x 1 batch of 4 = 300 optimizer steps: BatchNorm's running statistics (momentum 0.03 in YOLO
    # trunks) forget their initial values after ~200 steps, so eval-mode outputs match what training learned
    imgsz=160,
    batch=4,
    nbs=4,  # no gradient accumulation
    optimizer="AdamW",
    lr0=0.002,
    lrf=0.01,
    warmup_epochs=3,
    val=False,
    save=False,  # checkpoints at the end only: saving last.pt after each of 300 epochs took 78 of 175 s (same metrics)
    plots=False,
    seed=0,
    workers=0,
    **{**NO_AUGMENT, "translate": 0.1, "scale": 0.5, "fliplr": 0.5},  # validation pads the images differently: SOLO's
    # grids divide the whole padded input, so the model must have seen its objects at other places and sizes
)
# What learning must reach on the 4 training images (an untrained model scores 0). For orientation, YOLO11n-seg on
# LEARN_RECIPE, measured once: 0.781 (YOLO("yolo11n-seg.yaml").train(..., **LEARN_RECIPE)).
LEARNED_MASK_MAP50 = 0.75

SOLOV2_RECIPE = dict(  # solov2-n (ResNet BatchNorm momentum 0.1, GroupNorm head) learns in 60 steps; ~3 min
    epochs=60,  # x 1 batch of 4 = 60 optimizer steps (nbs=batch: no gradient accumulation)
    imgsz=256,
    batch=4,
    nbs=4,
    optimizer="AdamW",
    lr0=1e-3,  # measured on coco8 (mask mAP50 on the 4 train images): 3e-4 0.461, 1e-3 0.617, 2e-3 diverged (0);
    # 40 steps at 1e-3 0.550, imgsz 192 0.506 (the head's grids, not imgsz, set the cost: smaller inputs save little)
    lrf=1.0,  # no decay
    warmup_epochs=3,
    rect=True,
    val=False,
    save=False,  # checkpoints at the end only
    plots=False,
    seed=0,
    workers=0,
    **NO_AUGMENT,
)


@pytest.fixture(scope="session")
def overfit(coco8_train_as_val, tmp_path_factory):
    """yolo11n-solo trained on coco8-seg's 4 train images; returns the model (loaded from best.pt) and its metrics."""
    from ultra_solo import SOLO

    model = SOLO("yolo11n-solo.yaml")
    metrics = model.train(data=str(coco8_train_as_val), project=str(tmp_path_factory.mktemp("learn")), **LEARN_RECIPE)
    return model, metrics

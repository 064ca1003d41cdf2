"""End to end through Ultralytics' engine: train -> val(best.pt) -> predict, reload in a new process, resume."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from ultralytics.utils.metrics import SegmentMetrics

from ultra_solo import SOLO
from ultra_solo.models.solov2.network import SOLOv2Model
from ultra_solo.models.solov2.train import SOLOTrainer
from ultra_solo.models.solov2.val import SOLOMetrics

from .conftest import NO_AUGMENT

TINY = dict(imgsz=64, batch=4, workers=0, seed=0, **NO_AUGMENT)


@pytest.fixture(scope="module")
def run(coco8, tmp_path_factory):
    """A 2-epoch yolo11n-solo run on coco8-seg, with the callbacks it fired."""
    project = tmp_path_factory.mktemp("runs")
    model = SOLO("yolo11n-solo.yaml")
    fired = []
    for event in ("on_train_start", "on_train_epoch_end", "on_val_end", "on_model_save", "on_train_end"):
        model.add_callback(event, lambda _, e=event: fired.append(e))
    metrics = model.train(data=str(coco8), epochs=2, project=str(project), name="train", **TINY)
    return Path(project / "train"), model, metrics, fired


def test_training_writes_what_yolo_writes(run):
    save_dir, _, metrics, fired = run
    assert fired.count("on_train_epoch_end") == 2 and fired[0] == "on_train_start" and fired[-1] == "on_train_end"
    assert "on_model_save" in fired and "on_val_end" in fired
    header = (save_dir / "results.csv").read_text().splitlines()[0].split(",")
    assert [h for h in header if h.startswith("metrics/")] == SegmentMetrics().keys  # YOLO-seg's metric columns
    assert {"train/cls_loss", "train/mask_loss", "val/cls_loss", "val/mask_loss"} <= set(header)
    for name in ("results.png", "val_batch0_pred.jpg", "val_batch0_labels.jpg", "weights/best.pt", "weights/last.pt"):
        assert (save_dir / name).is_file(), name
    assert set(SegmentMetrics().keys) <= set(metrics.results_dict)
    assert isinstance(metrics, SOLOMetrics)  # best.pt chosen by mask mAP50-95 alone


def test_val_of_best_checkpoint_reproduces_the_trainers_final_validation(overfit, coco8_train_as_val, tmp_path):
    """`SOLO(best.pt).val()` with the run's data and size scores what the trainer's final validation of best.pt did."""
    model, trained = overfit
    assert trained.seg.map50 > 0.5  # a model that finds its objects: the comparison means something
    batch = model.trainer.validator.dataloader.batch_size  # Ultralytics validates training runs at twice the batch
    metrics = SOLO(model.trainer.best).val(data=str(coco8_train_as_val), imgsz=160, batch=batch, project=str(tmp_path))
    assert metrics.results_dict == pytest.approx(trained.results_dict, abs=1e-9)


def test_predict_results(overfit, coco8, tmp_path):
    model = SOLO(overfit[0].trainer.best)
    source = coco8.parent / "images" / "train"  # the images it learned: every one holds a detection
    results = model.predict(source, imgsz=160, conf=0.001, save=True, project=str(tmp_path), name="predict")
    assert len(results) == 4 and all(r.masks is not None for r in results)
    for r in results:
        h, w = r.orig_shape
        assert r.boxes.xyxy.shape[1] == 4 and (r.boxes.xyxy[:, 2:] <= r.boxes.xyxy.new_tensor([w, h])).all()
        assert len(r.masks) == len(r.boxes) and max(r.masks.data.shape[1:]) == 160  # the letterboxed input's size
        assert isinstance(r.plot(), np.ndarray)
    assert len(list((tmp_path / "predict").glob("*.jpg"))) == 4
    retina = model.predict(source, imgsz=160, conf=0.001, retina_masks=True)
    assert all(r.masks is not None and r.masks.data.shape[1:] == r.orig_shape for r in retina)


def test_reload_in_new_process(run, coco8):
    best = run[0] / "weights/best.pt"
    image = next((coco8.parent / "images" / "val").glob("*.jpg"))
    code = (
        f"from ultra_solo import SOLO; m = SOLO(r'{best}'); r = m.predict(r'{image}', imgsz=64, conf=0.001)[0]; "
        "print(type(m.model).__name__, m.task, len(m.names), r.boxes.xyxy.shape[1])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=best.parent, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[-4:] == ["SOLOv2Model", "segment", "80", "4"]


def test_yolo_refuses_a_solo_checkpoint_by_name(run, coco8, tmp_path):
    """YOLO's decoding would read SOLO outputs as boxes and find nothing: YOLO() and `yolo predict` say so instead."""
    from ultralytics import YOLO

    best = run[0] / "weights/best.pt"
    image = next((coco8.parent / "images" / "val").glob("*.jpg"))
    with pytest.raises(TypeError, match=r"is a SOLO model.*ultra-solo segment predict model="):
        YOLO(best).predict(image, imgsz=64)
    with pytest.raises(TypeError, match="is a SOLO model"):
        YOLO(best).val(data=str(coco8), imgsz=64, project=str(tmp_path))
    yolo = Path(sys.executable).parent / "yolo"
    out = subprocess.run([str(yolo), "predict", f"model={best}", f"source={image}", "imgsz=64", f"project={tmp_path}"],
                         capture_output=True, text=True, cwd=tmp_path, timeout=300)  # fmt: skip
    assert out.returncode != 0 and "is a SOLO model" in out.stdout + out.stderr


class Crash(Exception):
    """Raised by a callback to stop a run after its first epoch."""


def test_resume_after_crash(coco8, tmp_path):
    model = SOLO("yolo11n-solo.yaml")

    def crash(trainer):
        if trainer.epoch == 0:
            raise Crash

    model.add_callback("on_fit_epoch_end", crash)
    with pytest.raises(Crash):
        model.train(data=str(coco8), epochs=3, project=str(tmp_path), name="run", val=False, **TINY)
    last = tmp_path / "run" / "weights" / "last.pt"
    assert len((tmp_path / "run" / "results.csv").read_text().splitlines()) == 2  # header + epoch 1
    SOLO(last).train(resume=True)
    epochs = [int(float(r.split(",")[0])) for r in (tmp_path / "run" / "results.csv").read_text().splitlines()[1:]]
    assert epochs == [1, 2, 3]
    assert (tmp_path / "run" / "weights" / "best.pt").is_file()


@pytest.mark.parametrize(
    "yaml, size", [("yolo11n-solo-stride2.yaml", 32), ("yolo11n-solo-coverage.yaml", 64)], ids=["stride2", "coverage"]
)
def test_training_masks_follow_a_finer_mask_loss(coco8, tmp_path, yaml, size):
    # loss_stride 2: the training set's masks at input / 2; coverage_targets: at input resolution, to average down
    # (also after close_mosaic); validation's and args' stay at 4.
    model = Path(__file__).parents[1] / "benchmarks/ablation" / yaml
    args = dict(model=str(model), data=str(coco8), imgsz=64, project=str(tmp_path), name="t", **NO_AUGMENT)
    trainer = SOLOTrainer(overrides=args)
    trainer.model = SOLOv2Model(str(model), nc=trainer.data["nc"], verbose=False)
    train_set = trainer.build_dataset(trainer.data["train"], "train", 4)
    assert train_set[0]["masks"].shape[-2:] == (size, size) and trainer.args.mask_ratio == 4
    trainer.train_loader = SimpleNamespace(dataset=train_set)
    trainer._close_dataloader_mosaic()
    assert train_set[0]["masks"].shape[-2:] == (size, size) and trainer.args.mask_ratio == 4
    val_image = trainer.build_dataset(trainer.data["val"], "val", 4)[0]
    assert val_image["masks"].shape[-2:] == tuple(s // 4 for s in val_image["img"].shape[-2:])

"""Robustness: bad data, empty batches and predictions, non-finite losses, crashes, determinism, safe loading, DDP."""

from __future__ import annotations

import logging
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from ultralytics.utils import YAML

from ultra_solo import SOLO
from ultra_solo.models.solov2.loss import SOLOv2Loss
from ultra_solo.utils.labels import DatasetError

from .conftest import DATASETS, NO_AUGMENT

TINY = dict(epochs=1, imgsz=64, batch=4, workers=0, seed=0, plots=False, **NO_AUGMENT)
SQUARE = "0 0.30 0.30 0.70 0.30 0.70 0.70 0.30 0.70\n"  # one valid polygon, class 0


def write_image(file: Path, shape: tuple, dtype=np.uint8) -> None:
    """A random image of the given shape (h, w[, c]) and dtype, written with OpenCV."""
    high = 65535 if dtype == np.uint16 else 255
    cv2.imwrite(str(file), np.random.default_rng(0).integers(0, high, shape, dtype=dtype))


def dataset(root: Path, coco8: Path, extra: dict[str, tuple[callable, str | None]], names=None) -> Path:
    """A YOLO-seg dataset: coco8-seg's 4 train images plus `extra` {file name: (write image, label text or None)}.

    Train and val are the same folder. Returns its data.yaml.
    """
    images, labels = root / "images", root / "labels"
    images.mkdir(parents=True)
    labels.mkdir()
    for im in (coco8.parent / "images" / "train").glob("*.jpg"):
        shutil.copy(im, images / im.name)
        shutil.copy(coco8.parent / "labels" / "train" / f"{im.stem}.txt", labels / f"{im.stem}.txt")
    for name, (write, label) in extra.items():
        write(images / name)
        if label is not None:
            (labels / f"{Path(name).stem}.txt").write_text(label)
    yaml = root / "data.yaml"
    YAML.save(
        yaml, {"path": str(root), "train": "images", "val": "images", "names": names or YAML.load(coco8)["names"]}
    )
    return yaml


def truncated_jpeg(file: Path) -> None:
    """The first half of a real JPEG."""
    data = (DATASETS / "coco8-seg" / "images" / "train" / "000000000009.jpg").read_bytes()
    file.write_bytes(data[: len(data) // 2])


BAD_FILES = {  # file: (how to write it, label, used for training?)
    "corrupt.jpg": (lambda f: f.write_bytes(b"not an image" * 50), SQUARE, False),
    "truncated.jpg": (truncated_jpeg, SQUARE, False),
    "empty_label.jpg": (lambda f: write_image(f, (80, 100, 3)), "", True),
    "no_label.jpg": (lambda f: write_image(f, (80, 100, 3)), None, True),
    "above_one.jpg": (lambda f: write_image(f, (80, 100, 3)), "0 0.2 0.2 1.5 0.2 1.5 0.9\n", False),
    "negative.jpg": (lambda f: write_image(f, (80, 100, 3)), "0 -0.5 0.2 0.8 0.2 0.8 0.9\n", False),
    "class_99.jpg": (lambda f: write_image(f, (80, 100, 3)), SQUARE.replace("0 ", "99 ", 1), False),
    "odd_coords.jpg": (lambda f: write_image(f, (80, 100, 3)), "0 0.2 0.2 0.6 0.2 0.6 0.6 0.3\n", False),
    "rgba.png": (lambda f: write_image(f, (90, 120, 4)), SQUARE, True),
    "gray.png": (lambda f: write_image(f, (90, 120)), SQUARE, True),
    "sixteen_bit.png": (lambda f: write_image(f, (90, 120, 3), np.uint16), SQUARE, True),
    "tiny.jpg": (lambda f: write_image(f, (3, 3, 3)), SQUARE, False),
}


@pytest.fixture(scope="module")
def bad_run(coco8, tmp_path_factory):
    """One epoch of training and validation on coco8-seg's images mixed with every bad file; logs captured."""
    root = tmp_path_factory.mktemp("bad")
    extra = {name: (write, label) for name, (write, label, _) in BAD_FILES.items()}
    yaml = dataset(root / "data", coco8, extra)
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logging.getLogger("ultralytics").addHandler(handler)
    try:
        model = SOLO("yolo11n-solo.yaml")
        metrics = model.train(data=str(yaml), project=str(root), name="run", **TINY)
    finally:
        logging.getLogger("ultralytics").removeHandler(handler)
    log = "\n".join(r.getMessage() for r in records)
    return model, metrics, log, root / "run"


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_bad_file_is_skipped_with_a_warning_or_used(bad_run, name):
    model, _, log, _ = bad_run
    used = {Path(f).name for f in model.trainer.train_loader.dataset.im_files}
    expected_used = BAD_FILES[name][2]
    assert (name in used) == expected_used
    if not expected_used:
        assert name in log, f"no warning names {name}"


def test_bad_data_run_is_finite_and_keeps_good_images(bad_run):
    model, metrics, _, save_dir = bad_run
    used = {Path(f).name for f in model.trainer.train_loader.dataset.im_files}
    assert {"000000000009.jpg", "000000000025.jpg", "000000000030.jpg", "000000000034.jpg"} <= used
    rows = (save_dir / "results.csv").read_text().splitlines()
    header, values = rows[0].split(","), rows[-1].split(",")
    losses = [float(v) for h, v in zip(header, values) if "loss" in h]
    assert losses and all(math.isfinite(x) for x in losses)
    usable = 4 + sum(used for _, _, used in BAD_FILES.values())  # validation skips what training skips
    assert model.trainer.validator.seen == usable and all(map(math.isfinite, metrics.results_dict.values()))


def test_polygon_with_two_points_is_named(coco8, tmp_path):
    # 4 numbers after the class read as a box; Ultralytics then refuses the whole segment dataset without naming it
    yaml = dataset(
        tmp_path / "data", coco8, {"two_points.jpg": (lambda f: write_image(f, (80, 100, 3)), "0 0.2 0.2 0.6 0.6\n")}
    )
    with pytest.raises(DatasetError, match=r"two_points.txt:1"):
        SOLO("yolo11n-solo.yaml").train(data=str(yaml), project=str(tmp_path), name="run", **TINY)
    cli = Path(sys.executable).parent / "ultra-solo"
    out = subprocess.run([str(cli), "train", f"data={yaml}", f"project={tmp_path}", "epochs=1", "imgsz=64"],
                         capture_output=True, text=True)  # fmt: skip
    assert out.returncode == 2 and "two_points.txt:1" in out.stderr and len(out.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("shape", [(60, 1000, 3), (1000, 60, 3)])
def test_extreme_aspect_ratio(coco8, tmp_path, shape):
    yaml = dataset(tmp_path / "data", coco8, {"strip.jpg": (lambda f: write_image(f, shape), SQUARE)})
    model = SOLO("yolo11n-solo.yaml")
    model.train(data=str(yaml), project=str(tmp_path), name="run", **{**TINY, "imgsz": 128})
    assert "strip.jpg" in {Path(f).name for f in model.trainer.train_loader.dataset.im_files}
    results = model.predict(tmp_path / "data" / "images" / "strip.jpg", imgsz=128, conf=0.0)
    assert results[0].orig_shape == shape[:2]


@pytest.mark.parametrize(
    "content, message",
    [
        ({"train": "images", "val": "images"}, "names"),
        ({"train": "images", "names": {0: "a"}}, "val"),
        ({"train": "missing", "val": "missing", "names": {0: "a"}}, "missing"),
    ],
)
def test_bad_data_yaml_stops_with_one_line(coco8, tmp_path, content, message):
    (tmp_path / "images").mkdir()
    yaml = tmp_path / "data.yaml"
    YAML.save(yaml, {"path": str(tmp_path), **content})
    cli = Path(sys.executable).parent / "ultra-solo"
    out = subprocess.run([str(cli), "train", f"data={yaml}", "epochs=1", "imgsz=64"], capture_output=True, text=True)
    assert out.returncode == 2 and message in out.stderr and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr


def test_missing_data_file_stops_with_one_line(tmp_path):
    cli = Path(sys.executable).parent / "ultra-solo"
    out = subprocess.run([str(cli), "train", f"data={tmp_path / 'nope.yaml'}"], capture_output=True, text=True)
    assert out.returncode == 2 and "nope.yaml" in out.stderr and len(out.stderr.strip().splitlines()) == 1


@pytest.fixture(scope="module")
def trained(coco8, tmp_path_factory) -> Path:
    """best.pt of a 1-epoch run on coco8-seg."""
    project = tmp_path_factory.mktemp("trained")
    SOLO("yolo11n-solo.yaml").train(data=str(coco8), project=str(project), name="run", **TINY)
    return project / "run" / "weights" / "best.pt"


def test_a_model_that_predicts_nothing(trained, coco8, tmp_path):
    model = SOLO(trained)
    metrics = model.val(data=str(coco8), imgsz=64, project=str(tmp_path), conf=1.0)
    assert metrics.seg.map50 == 0 and metrics.box.map == 0
    results = model.predict(coco8.parent / "images" / "val", imgsz=64, conf=1.0)
    assert len(results) == 4 and all(len(r.boxes) == 0 and r.masks is None for r in results)


def test_max_det_edges(overfit, coco8):
    model, images = SOLO(overfit[0].trainer.best), coco8.parent / "images" / "train"
    assert sum(len(r.boxes) for r in model.predict(images, imgsz=160)) > 4
    results = model.predict(images, imgsz=160, max_det=1)
    assert all(len(r.boxes) == 1 and len(r.masks) == 1 for r in results)
    with pytest.raises(ValueError, match="'max_det' must be >= 1"):  # Ultralytics' own argument check
        model.predict(images, imgsz=160, max_det=0)


def test_a_non_finite_loss_is_skipped_and_counted(coco8, tmp_path, monkeypatch, caplog):
    calls = []
    original = SOLOv2Loss.__call__

    def nan_on_second_batch(self, preds, batch):
        loss, items = original(self, preds, batch)
        calls.append(1)
        return (loss * float("nan"), items) if len(calls) == 2 else (loss, items)

    monkeypatch.setattr(SOLOv2Loss, "__call__", nan_on_second_batch)
    model = SOLO("yolo11n-solo.yaml")
    with caplog.at_level(logging.WARNING, logger="ultralytics"):
        model.train(
            data=str(coco8), project=str(tmp_path), name="run", **{**TINY, "epochs": 2, "batch": 2, "val": False}
        )
    assert "skipped 1 training batch(es) with a non-finite loss" in caplog.text
    weights = model.model.state_dict().values()
    assert all(torch.isfinite(w).all() for w in weights if w.is_floating_point())
    rows = (tmp_path / "run" / "results.csv").read_text().splitlines()
    assert "nan" not in "".join(rows[1:]).lower()


def test_sigkill_during_epoch_two_then_resume(coco8, tmp_path):
    marker = tmp_path / "in-epoch-2"
    script = f"""
import time
from pathlib import Path
from ultra_solo import SOLO
from tests.conftest import NO_AUGMENT
def hold(trainer):
    if trainer.epoch == 1:
        Path({str(marker)!r}).touch()
        time.sleep(600)
model = SOLO("yolo11n-solo.yaml")
model.add_callback("on_train_batch_start", hold)
model.train(data={str(coco8)!r}, epochs=3, imgsz=64, batch=4, workers=0, seed=0, plots=False,
            project={str(tmp_path)!r}, name="run", **NO_AUGMENT)
"""
    repo = Path(__file__).resolve().parents[1]
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=repo, env=os.environ)
    try:
        deadline = time.time() + 300
        while not marker.exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.5)
        assert marker.exists(), "training never reached epoch 2"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    csv = tmp_path / "run" / "results.csv"
    assert len(csv.read_text().splitlines()) == 2  # header + epoch 1
    SOLO(tmp_path / "run" / "weights" / "last.pt").train(resume=True)
    epochs = [int(float(r.split(",")[0])) for r in csv.read_text().splitlines()[1:]]
    assert epochs == [1, 2, 3]
    assert SOLO(tmp_path / "run" / "weights" / "best.pt").task == "segment"


def test_truncated_checkpoint_is_refused_clearly(trained, tmp_path):
    broken = tmp_path / "broken.pt"
    broken.write_bytes(trained.read_bytes()[:100_000])
    with pytest.raises(TypeError, match="broken.pt is not a loadable checkpoint"):
        SOLO(broken)


def test_same_seed_same_run(coco8, tmp_path):
    rows = []
    for name in ("a", "b"):
        SOLO("yolo11n-solo.yaml").train(
            data=str(coco8), project=str(tmp_path), name=name, deterministic=True, **{**TINY, "epochs": 2}
        )
        lines = (tmp_path / name / "results.csv").read_text().splitlines()
        time_col = lines[0].split(",").index("time")
        rows.append([[v for i, v in enumerate(r.split(",")) if i != time_col] for r in lines])
    assert rows[0] == rows[1]


def test_safe_load_mode_loads_best(trained, coco8):
    image = next((coco8.parent / "images" / "val").glob("*.jpg"))
    code = f"from ultra_solo import SOLO; r = SOLO(r'{trained}').predict(r'{image}', imgsz=64)[0]; print('ok', len(r))"
    env = {**os.environ, "ULTRALYTICS_SAFE_LOAD": "1"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split()[-2] == "ok"


def test_ddp_script_imports_and_builds_our_trainer(coco8, tmp_path):
    from ultralytics.utils.dist import generate_ddp_file

    from ultra_solo.models.solov2.train import SOLOTrainer

    trainer = SOLOTrainer(overrides=dict(model="yolo11n-solo.yaml", data=str(coco8), project=str(tmp_path), **TINY))
    script = Path(generate_ddp_file(trainer))
    try:
        code = script.read_text()
        assert code.count("trainer.train()") == 1
        probe = script.with_name(f"probe_{script.name}")
        probe.write_text(code.replace("trainer.train()", "print(type(trainer).__module__, type(trainer).__name__)"))
        out = subprocess.run([sys.executable, str(probe)], capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr[-3000:]
        assert out.stdout.split()[-2:] == ["ultra_solo.models.solov2.train", "SOLOTrainer"]
    finally:
        for f in script.parent.glob(f"*{script.stem.split('_temp_')[-1]}*"):
            f.unlink()

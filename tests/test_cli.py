"""The `ultra-solo` command through subprocess: train, val, predict, help/version, refused arguments (the console
script on one, its entry point on all of them in one fresh interpreter)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import DATASETS

COCO8 = DATASETS / "coco8-seg" / "data.yaml"
CLI = shutil.which("ultra-solo", path=str(Path(sys.executable).parent)) or "ultra-solo"
SMALL = ["imgsz=64", "batch=4", "workers=0", "mosaic=0", "fliplr=0", "hsv_h=0", "hsv_s=0", "hsv_v=0"]


def ultra_solo(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([CLI, *args], capture_output=True, text=True, cwd=cwd, env=os.environ, timeout=600)


@pytest.fixture(scope="module")
def trained(coco8, tmp_path_factory) -> Path:
    """`ultra-solo segment train` for one epoch; returns the run folder."""
    project = tmp_path_factory.mktemp("cli")
    out = ultra_solo(
        "segment", "train", "model=yolo11n-solo.yaml", f"data={coco8}", "epochs=1", f"project={project}", "name=train",
        *SMALL, cwd=project,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    return project / "train"


def test_train(trained):
    assert (trained / "weights" / "best.pt").is_file()
    assert len((trained / "results.csv").read_text().splitlines()) == 2


def test_val(trained, coco8):
    best = trained / "weights" / "best.pt"
    out = ultra_solo("segment", "val", f"model={best}", f"data={coco8}", "imgsz=64", f"project={trained}", cwd=trained)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Mask(P" in out.stdout + out.stderr


def test_predict_saves_images_by_default(trained, coco8):
    best = trained / "weights" / "best.pt"
    source = coco8.parent / "images" / "val"
    out = ultra_solo("predict", f"model={best}", f"source={source}", "imgsz=64", f"project={trained}", "name=pred",
                     cwd=trained)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    assert len(list((trained / "pred").glob("*.jpg"))) == 4


def test_export_onnx_then_predict(trained, coco8):
    best = trained / "weights" / "best.pt"
    out = ultra_solo("export", f"model={best}", "format=onnx", "imgsz=64", cwd=trained)
    assert out.returncode == 0, out.stderr[-3000:]
    onnx = trained / "weights" / "best.onnx"
    assert onnx.is_file()
    image = next((coco8.parent / "images" / "val").glob("*.jpg"))
    out = ultra_solo("predict", f"model={onnx}", f"source={image}", f"project={trained}", "name=onnx", cwd=trained)
    assert out.returncode == 0, out.stderr[-3000:]
    assert (trained / "onnx" / image.name).is_file()


REFUSED = [
    (["segment", "train", "model=yolo11n-solo.yaml", "epochz=3"], "'epochz' is not a valid ultra-solo argument"),
    (["detect", "train"], "task 'detect' is not supported"),
    (["segment", "model=solov2-n.yaml"], "no mode given"),
    (["val", "data=x.yaml"], "'val' needs a model"),
    (["segment", "val", "model=missing-weights.pt"], "missing-weights.pt"),
    (["export", "model=solov2-n.yaml", "format=openvino"], "format='openvino' is not supported"),
    (["compare", "models=yolo11n-seg.yaml,solov2-n.yaml"], "compare needs data=... and models="),
    (["train", "models=a.yaml"], "'models' is not a valid ultra-solo argument"),
    (["compare", f"data={COCO8}", "models=yolo11n-seg.yaml", "seeds=0,0"], "seeds=(0, 0): expected distinct"),
    (["segment", "train", "data=coco8-seg.yaml"], "data=coco8-seg.yaml: not found on disk and could not be down"),
]

# Runs the console script's `main` on every case in one fresh interpreter (a process per case spends most of its time
# importing), each case's exit status and everything written to file descriptor 2 (logging included) as JSON.
REFUSE_ALL = """
import json, os, sys, tempfile
from ultra_solo.cli import main
out = []
for args in json.loads(sys.argv[1]):
    with tempfile.TemporaryFile() as f:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(f.fileno(), 2)
        try:
            status = main(args)
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
        f.seek(0)
        out.append([status, f.read().decode()])
print(json.dumps(out))
"""


def test_bad_arguments_are_refused_in_one_line(tmp_path):
    cases = json.dumps([args for args, _ in REFUSED])
    run = subprocess.run(
        [sys.executable, "-c", REFUSE_ALL, cases], capture_output=True, text=True, cwd=tmp_path, env=os.environ
    )
    assert run.returncode == 0, run.stderr[-3000:]
    results = json.loads(run.stdout.strip().splitlines()[-1])
    for (args, message), (status, err) in zip(REFUSED, results, strict=True):
        assert status == 2, args
        assert message in err, (args, err)
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1, (args, err)


def test_the_console_script_refuses_in_one_line(tmp_path):
    out = ultra_solo("segment", "train", "model=yolo11n-solo.yaml", "epochz=3", cwd=tmp_path)
    assert out.returncode == 2
    assert "'epochz' is not a valid ultra-solo argument" in out.stderr
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1


def test_help_and_version(tmp_path):
    from ultra_solo import __version__

    assert ultra_solo("version", cwd=tmp_path).stdout.strip() == __version__
    out = ultra_solo("help", cwd=tmp_path)
    assert out.returncode == 0 and "ultra-solo segment train" in out.stdout


def test_every_compare_keyword_is_a_compare_argument():
    """The CLI's compare keys are compare()'s own keywords, so none the README documents is refused."""
    import inspect

    from ultra_solo.cli import parse
    from ultra_solo.compare import compare

    own = {"models": "a.yaml,b.yaml", "cocoeval": False, "latency_images": 2, "picture_images": 0}
    assert set(own) <= set(inspect.signature(compare).parameters)
    mode, overrides = parse(["compare", "data=d.yaml", *(f"{k}={v}" for k, v in own.items()), "epochs=1"])
    assert mode == "compare" and overrides == {"data": "d.yaml", **own, "epochs": 1}

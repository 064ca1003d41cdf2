"""Tracking with Ultralytics' own trackers, offline (`lap` is a declared dependency): Python API and command line."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest

from ultra_solo import SOLO

from .test_cli import CLI


@pytest.fixture(scope="module")
def video(coco8, tmp_path_factory) -> Path:
    """A 6-frame video of coco8-seg's zebra image moving right by 6 px a frame."""
    image = cv2.imread(str(coco8.parent / "images" / "train" / "000000000034.jpg"))
    file = tmp_path_factory.mktemp("video") / "zebra.mp4"
    writer = cv2.VideoWriter(str(file), cv2.VideoWriter_fourcc(*"mp4v"), 5, image.shape[1::-1])
    for i in range(6):
        writer.write(np.roll(image, 6 * i, axis=1))
    writer.release()
    return file


def test_track_keeps_the_zebra_id(overfit, video):
    model = SOLO(overfit[0].trainer.best)
    results = model.track(video, imgsz=160, tracker="bytetrack.yaml", verbose=False)
    assert len(results) == 6
    zebra = [r.boxes.id[r.boxes.cls == 22].tolist() for r in results if r.boxes.id is not None]
    assert len(zebra) == 6 and all(ids == zebra[0] for ids in zebra) and len(zebra[0]) == 1
    assert all(r.masks is not None and len(r.masks) == len(r.boxes) for r in results)


def test_cli_track_saves_the_video(overfit, video, tmp_path):
    args = [CLI, "segment", "track", f"model={overfit[0].trainer.best}", f"source={video}", "imgsz=160",
            "tracker=bytetrack.yaml", f"project={tmp_path}", "name=track"]  # fmt: skip
    out = subprocess.run(args, capture_output=True, text=True, cwd=tmp_path, env=os.environ, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    saved = list((tmp_path / "track").glob("zebra.*"))
    assert saved and cv2.VideoCapture(str(saved[0])).get(cv2.CAP_PROP_FRAME_COUNT) == 6

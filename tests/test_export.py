"""Export to ONNX and TorchScript; exported files predict and validate like the .pt (model from test_learning)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from ultra_solo import SOLO
from ultra_solo.models.solov2 import export
from ultra_solo.models.solov2.decode import dense_outputs, detections
from ultra_solo.models.solov2.network import decode_settings, solo_decoding

IMGSZ = 160  # the learning recipe's size


@pytest.fixture(scope="module")
def weights(overfit, tmp_path_factory) -> Path:
    """A copy of the overfit model's best.pt in its own folder (exports are written next to it)."""
    folder = tmp_path_factory.mktemp("export")
    return Path(shutil.copy(overfit[0].trainer.best, folder / "best.pt"))


@pytest.fixture(scope="module")
def exported(weights) -> dict[str, Path]:
    """Static ONNX and TorchScript exports, a dynamic-batch ONNX export and a dynamic end2end one."""
    model = SOLO(weights)
    dynamic = Path(model.export(format="onnx", imgsz=IMGSZ, dynamic=True))
    files = {"dynamic": Path(shutil.move(dynamic, dynamic.with_name("dynamic.onnx")))}
    end2end = Path(model.export(format="onnx", imgsz=IMGSZ, dynamic=True, nms=True))
    files["end2end"] = Path(shutil.move(end2end, end2end.with_name("end2end.onnx")))
    files.update({fmt: Path(model.export(format=fmt, imgsz=IMGSZ)) for fmt in ("onnx", "torchscript")})
    return files


def test_files_and_metadata(exported, weights):
    for fmt, file in exported.items():
        assert file.is_file() and file.stat().st_size > 1e6, fmt
        model = SOLO(file)
        assert model.task == "segment"
    backend = SOLO(exported["onnx"]).predict(np.zeros((64, 64, 3), np.uint8), imgsz=IMGSZ)[0]
    assert backend.names == SOLO(weights).names


def test_onnxruntime_runs_the_graph(exported, weights):
    import onnxruntime

    session = onnxruntime.InferenceSession(str(exported["dynamic"]), providers=["CPUExecutionProvider"])
    assert "Trilu" not in {node.op_type for node in __import__("onnx").load(str(exported["dynamic"])).graph.node}
    images = torch.rand(2, 3, IMGSZ, IMGSZ)
    scores, kernels, feats = session.run(None, {"images": images.numpy()})
    model = SOLO(weights).model.float().eval()
    cells, e = model.layout.num_cells, model.model[-1].kernel_size
    assert scores.shape == (2, cells, 80) and kernels.shape == (2, cells, e + 2) and feats.shape == (2, e, 40, 40)
    with torch.no_grad(), solo_decoding(model):
        (ref_scores, _, ref_feats), _ = model(images)
    # point NMS can flip between near-equal neighbours, so compare almost all scores tightly
    assert np.isclose(scores, ref_scores.numpy(), atol=1e-4).mean() > 0.999
    assert np.allclose(feats, ref_feats.numpy(), atol=1e-3)
    wide = session.run(None, {"images": torch.rand(1, 3, IMGSZ - 32, IMGSZ).numpy()})  # rect, as predict letterboxes
    assert wide[0].shape == (1, cells, 80) and wide[2].shape == (1, e, 32, 40)  # the graph keeps its traced grids
    (probs, _, _), *_ = detections([torch.from_numpy(t) for t in wide], decode_settings(model), 0.001, 300)
    assert probs.shape[1:] == (32, 40)  # decoded on those grids (`GridLayout.grid_input`)


def test_end2end_graph_decodes_in_onnxruntime(exported):
    import onnx
    import onnxruntime

    graph = onnx.load(str(exported["end2end"]))
    assert "Trilu" not in {node.op_type for node in graph.graph.node}
    metadata = {p.key: p.value for p in graph.metadata_props}
    assert "'end2end': {'conf': 0.001, 'max_det': 300, 'agnostic': False}" in metadata["solo"]
    session = onnxruntime.InferenceSession(str(exported["end2end"]), providers=["CPUExecutionProvider"])
    scores, classes, probs = session.run(None, {"images": np.random.default_rng(0).random((2, 3, IMGSZ, IMGSZ), "f4")})
    assert scores.shape == classes.shape == (2, 300) and probs.shape == (2, 300, 40, 40)
    assert (np.diff(scores, axis=1) <= 0).all() and ((classes >= 0) & (classes < 80)).all()


def mask_iou(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.bool(), b.bool()
    return float((a & b).sum() / (a | b).sum().clamp_min(1))


@pytest.mark.parametrize("fmt", ["onnx", "torchscript", "end2end"])
def test_exported_predictions_match_pt(exported, weights, coco8, fmt):
    """Predictions of every export are the .pt's. The end2end graph decodes at its export conf (0.001), where more
    candidates vote on each mask (`vote_thr`) than at predict's 0.25: it is compared with the .pt decoding at 0.001,
    on the detections scored 0.25 or more."""
    source = coco8.parent / "images" / "train"  # the images the model learned
    conf = 0.001 if fmt == "end2end" else 0.25
    pt = SOLO(weights).predict(source, imgsz=IMGSZ, rect=False, conf=conf)  # same square letterbox as the export
    ex = SOLO(exported[fmt]).predict(source, imgsz=IMGSZ, rect=False, conf=conf)  # end2end is dynamic: rect allowed
    pt, ex = ([r[r.boxes.conf >= 0.25] for r in results] for results in (pt, ex))
    assert sum(len(r.boxes) for r in pt) >= 4
    for a, b in zip(pt, ex):
        assert a.path == b.path and len(a.boxes) == len(b.boxes), a.path
        assert torch.equal(a.boxes.cls, b.boxes.cls)
        assert torch.allclose(a.boxes.conf, b.boxes.conf, atol=1e-3)
        for ma, mb in zip(a.masks.data if a.masks else [], b.masks.data if b.masks else []):
            assert mask_iou(ma, mb) >= 0.95


@pytest.mark.parametrize("fmt", ["onnx", "torchscript", "end2end"])
def test_exported_val_matches_pt(exported, weights, coco8_train_as_val, fmt, tmp_path):
    args = dict(data=str(coco8_train_as_val), imgsz=IMGSZ, batch=1, project=str(tmp_path), plots=False)
    pt = SOLO(weights).val(rect=False, **args)
    ex = SOLO(exported[fmt]).val(rect=False, **args)
    assert pt.seg.map50 > 0.3
    assert abs(pt.seg.map - ex.seg.map) <= 0.005 and abs(pt.seg.map50 - ex.seg.map50) <= 0.005
    assert abs(pt.box.map - ex.box.map) <= 0.005


def test_half_precision_outputs_decode_like_fp32(weights, coco8):
    """What `half=True` exports give the shared postprocess: fp16 dense outputs decode to the fp32 detections."""
    import cv2

    files = sorted((coco8.parent / "images" / "train").glob("*.jpg"))
    images = [cv2.resize(cv2.imread(str(f)), (IMGSZ, IMGSZ))[..., ::-1] for f in files]
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255  # (B, 3, IMGSZ, IMGSZ) RGB
    model = SOLO(weights).model.float().eval()
    settings = decode_settings(model)
    with torch.no_grad(), solo_decoding(model):
        full = dense_outputs(model(x))
        half = dense_outputs(model.half()(x.half()))
    assert all(t.dtype == torch.float16 for t in half)
    found = 0
    for i, (ref, out) in enumerate(zip(detections(full, settings, 0.25, 100), detections(half, settings, 0.25, 100))):
        # The confident detections agree; below 0.35 fp16 may move a low, decayed score across conf (Matrix NMS)
        n = int((ref[1] >= 0.35).sum())
        ref, out = tuple(t[:n] for t in ref), tuple(t[:n] for t in out)
        found += n
        assert torch.equal(ref[2], out[2]) and torch.allclose(ref[1], out[1], atol=1e-2), files[i].name
        for a, b in zip(ref[0] > settings.mask_thr, out[0] > settings.mask_thr):
            assert mask_iou(a, b) >= (0.95 if a.sum() >= 50 else 0.5)  # a tiny mask's edge pixels are most of it
    assert found >= 4


def test_missing_packages_and_formats_are_named(weights, monkeypatch):
    with pytest.raises(export.UnsupportedFormatError, match="openvino"):
        SOLO(weights).export(format="openvino")
    monkeypatch.setattr(export, "find_spec", lambda name: None if name == "onnxslim" else object())
    with pytest.raises(export.MissingExtraError, match=r"onnxslim: pip install 'ultra-solo\[export\]'"):
        SOLO(weights).export(format="onnx")


def test_stride4_skip_exports_like_the_pt(weights, tmp_path):
    # SOLOPANHeadP2 reads the trunk's stride-4 row (one more input to the head): its ONNX and end2end exports give the
    # .pt's dense outputs and detections. It starts from the learned model's weights, its skip made to contribute.
    import onnxruntime

    model = SOLO(str(Path(__file__).parents[1] / "benchmarks" / "ablation" / "yolo11n-solo-p2.yaml"))
    model.load(str(weights))
    torch.manual_seed(0)
    with torch.no_grad():
        model.model.model[-1].proto.skip.bn.weight.uniform_(0.5, 1.5)
    model.save(tmp_path / "p2.pt")
    model = SOLO(tmp_path / "p2.pt")
    onnx_file = Path(model.export(format="onnx", imgsz=IMGSZ))
    dense_file = Path(shutil.move(onnx_file, onnx_file.with_name("dense.onnx")))
    end2end_file = Path(model.export(format="onnx", imgsz=IMGSZ, nms=True))
    x = torch.rand(1, 3, IMGSZ, IMGSZ)
    net = model.model.float().eval()
    with torch.no_grad(), solo_decoding(net):
        ref = dense_outputs(net(x))
    providers = ["CPUExecutionProvider"]
    dense = onnxruntime.InferenceSession(str(dense_file), providers=providers).run(None, {"images": x.numpy()})
    assert np.isclose(dense[0], ref[0].numpy(), atol=1e-4).mean() > 0.999  # point NMS may flip near-equal neighbours
    assert np.allclose(dense[1], ref[1].numpy(), atol=1e-3) and np.allclose(dense[2], ref[2].numpy(), atol=1e-3)
    scores, _, _ = onnxruntime.InferenceSession(str(end2end_file), providers=providers).run(None, {"images": x.numpy()})
    [(_, conf, _)] = detections(ref, decode_settings(net), 0.001, 300)
    assert len(conf) > 0 and np.allclose(scores[0, : len(conf)], conf.numpy(), atol=1e-3)

"""Transfer from YOLO-seg checkpoints: a transferred SOLO model computes YOLO's class and pre-crop mask logits."""

from __future__ import annotations

import logging
from copy import deepcopy
from pathlib import Path

import pytest
import torch
from ultralytics.nn.tasks import SegmentationModel

from ultra_solo import SOLO
from ultra_solo.models.solov2.cfg import find_model_yaml, load_model_yaml
from ultra_solo.models.solov2.network import SOLOv2Model
from ultra_solo.models.solov2.pan_head import SOLOPANHead
from ultra_solo.models.solov2.transfer import widened

# family -> the log's counts per part from an 80-class checkpoint of scale n (YOLO11's mask features have 18 tensors of
# SOLO's own: the P4/P5 laterals and the stride-4 skip; YOLO26's Proto26 has its own)
COUNTS = {
    "yolo11": "trunk 378/378, category 78/78, kernels 42/42, mask features 20/38 (18 SOLO's own)",
    "yolo26": "trunk 468/468, category 78/78, kernels 42/42, mask features 38/38",
}


def yolo_checkpoint(family: str, file, seed: int = 0) -> SegmentationModel:
    """Save an 80-class YOLO-seg checkpoint with random weights and BatchNorm statistics (fp16, as Ultralytics saves
    them) and return the model as loaded back from it, in float."""
    torch.manual_seed(seed)
    seg = SegmentationModel(f"{family}n-seg.yaml", nc=80, verbose=False)
    with torch.no_grad():
        for m in seg.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.2)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.2)
    torch.save({"model": deepcopy(seg).half(), "train_args": {}}, file)
    return torch.load(file, weights_only=False)["model"].float().eval()


def yolo_logits(seg: SegmentationModel, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """YOLO's class logits (B, nc, A) and mask logits before the box crop (B, A, H/4, W/4), one-to-many branches."""
    with torch.no_grad():
        (_, proto), preds = seg(x)
    preds = preds.get("one2many", preds)
    masks = preds["mask_coefficient"].transpose(1, 2) @ proto.flatten(2)  # (B, A, h*w)
    return preds["scores"], masks.view(*masks.shape[:2], *proto.shape[2:])


def solo_logits(model: SOLOv2Model, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """SOLO's category logits (B, nc, R) and every cell's mask logits (B, R, H/4, W/4), kernel . mask features."""
    model.eval().decoder = "solo"
    with torch.no_grad():
        _, raw = model(x)
        kernels = torch.cat([k.flatten(2) for k in raw["kernels"]], 2).transpose(1, 2)  # (B, R, C)
        cells = torch.arange(kernels.shape[1]).expand(x.shape[0], -1)
        masks = model.layout.mask_logits(kernels, raw["mask_feats"], cells)
    return torch.cat([c.flatten(2) for c in raw["cls"]], 2), masks


@pytest.mark.parametrize("family", COUNTS)
def test_transferred_head_computes_yolo_logits(family, tmp_path, caplog):
    file = tmp_path / f"{family}n-seg.pt"
    seg = yolo_checkpoint(family, file)
    model = SOLO(f"{family}n-solo.yaml")  # 80 classes, as the checkpoint
    with caplog.at_level(logging.INFO, logger="ultralytics"):
        model.load(str(file))
    assert COUNTS[family] in caplog.text and "not used by SOLO: box branch (42 tensors)" in caplog.text
    assert model.model.weights_source.startswith(f"SegmentationModel checkpoint {file}: {COUNTS[family]}")
    x = torch.rand(2, 3, 320, 320)  # imgsz 320: grids 40 / 20 / 10 = YOLO's anchor grid
    (cls, masks), (yolo_cls, yolo_masks) = solo_logits(model.model, x), yolo_logits(seg, x)
    torch.testing.assert_close(cls, yolo_cls, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(masks, yolo_masks, rtol=1e-4, atol=1e-4)
    assert masks.std() > 0.01 and cls.std() > 0.01  # logits that vary, not zeros compared with zeros


@pytest.mark.parametrize("family", COUNTS)
def test_one_class_model_from_80_class_checkpoint_gets_yolo_masks(family, tmp_path, caplog):
    file = tmp_path / f"{family}n-seg.pt"
    seg = yolo_checkpoint(family, file, seed=1)
    model = SOLOv2Model(f"{family}n-solo.yaml", nc=1, verbose=False)  # c3 = 64 for 1 class, 80 in the checkpoint
    with caplog.at_level(logging.INFO, logger="ultralytics"):
        model.load({"model": torch.load(file, weights_only=False)["model"]})
    assert "category 72/78" in model.weights_source  # rebuilt at the checkpoint's width: all but the three last 1x1s
    assert "did not fit (6, kept SOLO's initialisation): model.23.cv3.0.2.weight (80, 80, 1, 1) vs (1, 80, 1, 1)" in (
        caplog.text
    )
    x = torch.rand(1, 3, 320, 320)
    (cls, masks), (_, yolo_masks) = solo_logits(model, x), yolo_logits(seg, x)
    torch.testing.assert_close(masks, yolo_masks, rtol=1e-4, atol=1e-4)
    assert cls.shape[1] == 1
    feats = model._backbone_features(x, [16, 19, 22])  # the category branches' hidden layers are YOLO's
    for ours, theirs, f in zip(model.model[-1].cv3, seg.model[-1].cv3, feats):
        torch.testing.assert_close(ours[:-1](f), theirs[:-1](f), rtol=1e-4, atol=1e-4)


def test_offset_bias_starts_masks_as_a_soft_crop_of_yolos(tmp_path):
    # offset_bias: the cell-offset weights start at (a, b) whatever the features, at build and after a transfer: every
    # cell's mask logit is YOLO's pre-crop logit plus a * |x - cx| + b * |y - cy| in cells of its level.
    file = tmp_path / "yolo11n-seg.pt"
    seg = yolo_checkpoint("yolo11", file, seed=2)
    soft = tmp_path / "yolo11n-solo-soft.yaml"
    yaml_text = find_model_yaml("yolo11-solo.yaml")[0].read_text()
    soft.write_text(yaml_text.replace("\nsolo:", "\nsolo:\n  offset_bias: [-2.0, -0.5]", 1))
    model = SOLO(str(soft))
    assert all(b[-1].bias[-2:].tolist() == [-2.0, -0.5] for b in model.model.model[-1].cv4)
    model.load(str(file))
    assert model.model.weights_source.endswith("cell-offset biases at offset_bias [-2.0, -0.5]")
    x = torch.rand(1, 3, 320, 320)
    (_, masks), (_, yolo_masks) = solo_logits(model.model, x), yolo_logits(seg, x)
    cell = 20 * 40 + 5  # P3 (grid 40): row 20, column 5; the cell's centre at mask pixel (20.5 * 2, 5.5 * 2)
    ys, xs = (torch.arange(80.0) + 0.5) / 80, (torch.arange(80.0) + 0.5) / 80  # mask-pixel centres, in image fractions
    decay = -2.0 * (xs - 5.5 / 40).abs()[None] * 40 - 0.5 * (ys - 20.5 / 40).abs()[:, None] * 40  # (80, 80)
    torch.testing.assert_close(masks[0, cell], yolo_masks[0, cell] + decay, rtol=1e-4, atol=1e-4)


def test_offset_bias_is_checked():
    from ultra_solo.models.solov2.settings import SOLOSettings

    block = {"num_grids": [40], "scale_ranges": [[0, 1]], "offsets": True}
    assert SOLOSettings.from_dict({**block, "offset_bias": [-1, -2]}).offset_bias == (-1.0, -2.0)
    assert SOLOSettings.from_dict(block).offset_bias == (0.0, 0.0)
    with pytest.raises(ValueError, match="offset_bias must be two numbers"):
        SOLOSettings.from_dict({**block, "offset_bias": -1}, "my.yaml")
    with pytest.raises(ValueError, match="offset_bias needs offsets: true"):
        SOLOSettings.from_dict({**block, "offsets": False, "offset_bias": [-1, -1]}, "my.yaml")


def test_trunk_only_setting_keeps_the_head_from_scratch(tmp_path):
    file = tmp_path / "yolo11n-seg.pt"
    yolo_checkpoint("yolo11", file)
    trunk_only = tmp_path / "yolo11n-solo-trunk.yaml"
    yaml_text = find_model_yaml("yolo11-solo.yaml")[0].read_text()
    trunk_only.write_text(yaml_text.replace("\nsolo:", "\nsolo:\n  transfer_head: false", 1))
    model = SOLO(str(trunk_only))
    scratch = deepcopy(model.model.model[-1].state_dict())
    model.load(str(file))
    assert model.model.weights_source == (
        f"SegmentationModel checkpoint {file}: trunk 378/378, category 0/78, kernels 0/42, "
        "mask features 0/38 (18 SOLO's own) (trunk only: transfer_head false)"
    )
    assert all(torch.equal(v, scratch[k]) for k, v in model.model.model[-1].state_dict().items())


def test_pretrained_argument_transfers_trunk_and_head_for_training(coco8, tmp_path):
    from .conftest import NO_AUGMENT

    file = tmp_path / "yolo26n-seg.pt"
    saved = yolo_checkpoint("yolo26", file).state_dict()
    started = {}

    def record(trainer):  # the model as the trainer built and loaded it, before any step
        state = trainer.model.state_dict()
        started["equal"] = [k for k, v in state.items() if k in saved and torch.equal(v, saved[k])]
        started["source"] = trainer.model.weights_source

    model = SOLO("yolo26n-solo.yaml")
    model.add_callback("on_pretrain_routine_end", record)
    model.train(data=str(coco8), pretrained=str(file), epochs=1, imgsz=64, batch=4, workers=0, val=False,
                project=str(tmp_path), name="run", **NO_AUGMENT)  # fmt: skip
    assert started["source"].startswith(f"SegmentationModel checkpoint {file}: {COUNTS['yolo26']}")  # coco8: 80 classes
    assert len(started["equal"]) == 468 + 78 + 42 + 38 - 10  # every tensor transferred as it is (10 were widened)


def test_widened_puts_the_checkpoint_tensor_in_the_leading_slice():
    src = torch.arange(6.0).view(2, 3)
    out = widened(torch.empty(2, 5), src, 1)
    assert torch.equal(out, torch.tensor([[0.0, 1, 2, 0, 0], [3, 4, 5, 0, 0]]))
    assert widened(torch.empty(4, 3), src, 0)[2:].abs().sum() == 0
    assert widened(torch.empty(3, 5), src, 1) is None  # another dimension differs
    assert widened(torch.empty(2, 3), src, 1) is None  # not wider


def test_checkpoint_of_the_old_head_is_refused_by_name():
    head = SOLOPANHead.__new__(SOLOPANHead)
    with pytest.raises(TypeError, match="predates ultra-solo 0.2"):
        head.__setstate__({"_modules": {"grid_branches": None}, "training": False})


def test_stride4_skip_starts_silent_after_transfer(tmp_path, caplog):
    # SOLOPANHeadP2 (benchmarks/ablation/yolo11n-solo-p2.yaml): the skip from the trunk's stride-4 row is SOLO's own
    # (6 tensors more) and adds nothing until trained, so the transferred model still computes YOLO's logits.
    file = tmp_path / "yolo11n-seg.pt"
    seg = yolo_checkpoint("yolo11", file)
    model = SOLO(str(Path(__file__).parents[1] / "benchmarks" / "ablation" / "yolo11n-solo-p2.yaml"))
    with caplog.at_level(logging.INFO, logger="ultralytics"):
        model.load(str(file))
    assert "trunk 378/378, category 78/78, kernels 42/42, mask features 20/38 (18 SOLO's own)" in caplog.text
    x = torch.rand(1, 3, 320, 256)
    (cls, masks), (yolo_cls, yolo_masks) = solo_logits(model.model, x), yolo_logits(seg, x)
    torch.testing.assert_close(cls, yolo_cls, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(masks, yolo_masks, rtol=1e-4, atol=1e-4)


def test_yolo26_semantic_head_transfers_and_changes_no_logit(tmp_path, caplog):
    # semantic_weight: yolo26-solo keeps Proto26's semantic head (14 tensors), which a YOLO26-seg checkpoint gives it;
    # eval outputs never read it, so the transferred model still computes YOLO's logits.
    file = tmp_path / "yolo26n-seg.pt"
    seg = yolo_checkpoint("yolo26", file)
    cfg = load_model_yaml("yolo26n-solo.yaml")
    cfg["solo"]["semantic_weight"] = 3.0
    model = SOLOv2Model(cfg, verbose=False)
    with caplog.at_level(logging.INFO, logger="ultralytics"):
        model.load({"model": torch.load(file, weights_only=False)["model"]})
    assert "trunk 468/468, category 78/78, kernels 42/42, mask features 52/52" in caplog.text
    assert "semantic head" not in caplog.text  # no longer among the checkpoint's parts SOLO leaves unused
    ours, theirs = model.model[-1].proto.semseg, seg.model[-1].proto.semseg
    assert all(torch.equal(a, b) for a, b in zip(ours.state_dict().values(), theirs.state_dict().values()))
    x = torch.rand(1, 3, 320, 320)
    (cls, masks), (yolo_cls, yolo_masks) = solo_logits(model, x), yolo_logits(seg, x)
    torch.testing.assert_close(cls, yolo_cls, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(masks, yolo_masks, rtol=1e-4, atol=1e-4)

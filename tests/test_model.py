"""Model family: every scale builds with the configured widths, names resolve from any folder, ImageNet weights."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import torchvision
from ultralytics.utils import YAML

from ultra_solo import SOLO
from ultra_solo.models.solov2 import backbone
from ultra_solo.models.solov2.cfg import find_model_yaml, load_model_yaml
from ultra_solo.models.solov2.head import to_grid, with_coords
from ultra_solo.models.solov2.network import SOLOv2Model
from ultra_solo.models.solov2.pan_head import conv_with_coords

WIDTHS = {  # scale: backbone, FPN, head, stacked convs, mask features mid, out
    "n": ("resnet18", 128, 256, 2, 64, 128),
    "s": ("resnet34", 192, 384, 3, 96, 192),
    "m": ("resnet50", 256, 512, 4, 128, 256),
    "l": ("resnet101", 384, 768, 5, 192, 384),
}


def test_every_scale_builds_with_its_widths():
    params = {}
    for scale, (resnet, fpn, head, stacked, mid, out) in WIDTHS.items():
        model = SOLOv2Model(f"solov2-{scale}.yaml", nc=5, verbose=False)
        h = model.model[-1]
        reference = torchvision.models.get_model(resnet, weights=None)
        assert sum(p.numel() for p in model.model[0].parameters()) == sum(
            p.numel() for n, p in reference.named_parameters() if not n.startswith("fc.")
        )
        assert h.fpn.layer_blocks[0][0].out_channels == fpn
        assert len(h.instance_branch.cls_tower) == stacked == len(h.instance_branch.kernel_tower)
        assert h.instance_branch.cls_tower[0][0].out_channels == head
        assert h.instance_branch.cls_pred.out_channels == 5
        assert h.instance_branch.kernel_pred.out_channels == out  # 1x1 dynamic kernels over E = out channels
        assert h.mask_branch.levels[0][0][0].out_channels == mid
        assert h.mask_branch.fuse[0].out_channels == out
        assert h.num_grids == [40, 36, 24, 16, 12]
        params[scale] = sum(p.numel() for p in model.parameters())
    assert params["n"] < params["s"] < params["m"] < params["l"]


def test_forward_shapes():
    model = SOLOv2Model("solov2-n.yaml", nc=3, verbose=False).eval()
    model.decoder = "solo"  # the handshake: this test reads the dense outputs itself
    with torch.no_grad():
        (scores, kernels, feats), raw = model(torch.rand(2, 3, 192, 256))
    # grids 40 / 36 / 24 / 16 / 12 along the longer side, 3/4 of them along the shorter (cells square, `level_grid`)
    grids = [(30, 40), (27, 36), (18, 24), (12, 16), (9, 12)]
    assert [tuple(c.shape[-2:]) for c in raw["cls"]] == grids and raw["mask_feats"] is feats
    cells = sum(h * w for h, w in grids)  # 2904
    assert scores.shape == (2, cells, 3) and kernels.shape == (2, cells, 128) and feats.shape == (2, 128, 48, 64)
    assert ((scores >= 0) & (scores <= 1)).all()


def test_grid_resize_is_skipped_only_where_it_is_identity():
    x = torch.rand(1, 4, 10, 10)
    assert to_grid(x, (10, 10)) is x  # eager: the neck output is already the grid
    assert torch.equal(F.interpolate(x, size=(10, 10), mode="bilinear", align_corners=False), x)  # what it skips
    assert to_grid(x, (5, 4)).shape == (1, 4, 5, 4)
    traced = torch.jit.trace(lambda t: to_grid(t, (10, 10)), x)  # an export traced at the grid's size ...
    assert traced(torch.rand(1, 4, 20, 20)).shape == (1, 4, 10, 10)  # ... still resizes other sizes


def test_conv_with_coords_is_the_conv_over_concatenated_coordinates():
    from ultralytics.nn.modules import Conv
    from ultralytics.utils.torch_utils import fuse_conv_and_bn

    layer = Conv(6 + 2, 5, 3)
    torch.nn.init.normal_(layer.bn.running_mean)
    x = torch.rand(2, 6, 12, 10)
    assert torch.equal(conv_with_coords(layer, x), layer(with_coords(x)))  # training: the conv itself
    layer.eval()
    with torch.inference_mode():  # split conv, coordinate term cached per size and weights
        for size in ((12, 10), (8, 8), (12, 10)):
            x = torch.rand(2, 6, *size)
            torch.testing.assert_close(conv_with_coords(layer, x), layer(with_coords(x)))
    with torch.no_grad():  # new weights, then fused ones, refresh the term
        layer.conv.weight.mul_(-2)
    with torch.inference_mode():
        torch.testing.assert_close(conv_with_coords(layer, x), layer(with_coords(x)))
        layer.conv = fuse_conv_and_bn(layer.conv, layer.bn)  # what model.fuse() does
        del layer.bn
        layer.forward = layer.forward_fuse
        torch.testing.assert_close(conv_with_coords(layer, x), layer(with_coords(x)))
    x = torch.rand(2, 6, 12, 10)
    with torch.no_grad():  # outside inference mode (FLOPs counting, autograd): the conv itself
        assert torch.equal(conv_with_coords(layer, x), layer(with_coords(x)))


def test_names_resolve_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    file, scale = find_model_yaml("solov2-s.yaml")
    assert file.name == "solov2.yaml" and scale == "s"
    assert load_model_yaml("solov2.yaml")["scale"] == "n"  # the first scale, as Ultralytics does
    model = SOLO("solov2-m.yaml")
    assert model.task == "segment" and model.model.yaml["scale"] == "m"
    custom = tmp_path / "my-solo.yaml"
    custom.write_text(file.read_text())
    assert SOLOv2Model(str(custom), verbose=False).yaml["scale"] == "n"


def test_unknown_names_are_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match="solov9"):
        SOLO("solov9-n.yaml")
    with pytest.raises(ValueError, match="scale 'x'"):
        SOLO("solov2-x.yaml")


def test_imagenet_weights_from_file_and_cache(tmp_path, monkeypatch, caplog):
    reference = torchvision.models.resnet18(weights=None)
    file = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), file)
    model = SOLOv2Model("solov2-n.yaml", verbose=False)
    assert model.load_pretrained_backbone(file) == len(model.model[0].m.state_dict())
    assert torch.equal(model.model[0].m[0].weight, reference.conv1.weight)
    assert torch.equal(model.model[0].m[7][1].bn2.running_var, reference.layer4[1].bn2.running_var)

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))  # empty cache: warn once, no download
    monkeypatch.setattr(backbone, "_warned", set())
    with caplog.at_level(logging.WARNING, logger="ultralytics"):
        assert model.load_pretrained_backbone(True) == 0
        assert model.load_pretrained_backbone(True) == 0
    assert sum("training the backbone from scratch" in r.message for r in caplog.records) == 1

    cached = backbone.cached_weights_file("resnet18")
    assert cached.parent == tmp_path / "hub" / "checkpoints"
    cached.parent.mkdir(parents=True)
    torch.save(reference.state_dict(), cached)
    assert SOLOv2Model("solov2-n.yaml", verbose=False).load_pretrained_backbone(True) > 0
    assert model.load_pretrained_backbone(False) == 0


def test_bad_weights_file_is_refused(tmp_path):
    model = SOLOv2Model("solov2-n.yaml", verbose=False)
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        model.load_pretrained_backbone(tmp_path / "missing.pth")
    wrong = tmp_path / "resnet50.pth"
    torch.save(torchvision.models.resnet50(weights=None).state_dict(), wrong)
    with pytest.raises(ValueError, match="do not match"):
        model.load_pretrained_backbone(wrong)


ABLATION = Path(__file__).resolve().parents[1] / "benchmarks" / "ablation"
YOLO_SOLO = {"yolo11": "11/yolo11-seg.yaml", "yolo26": "26/yolo26-seg.yaml"}  # family -> Ultralytics' seg YAML


@pytest.mark.parametrize("yaml", sorted(p.name for p in ABLATION.glob("*.yaml")))
def test_every_ablation_yaml_builds_and_runs(yaml):
    # the README's ablation rows are trained from these files: each must still build and give dense outputs
    model = SOLOv2Model(str(ABLATION / yaml), nc=1, verbose=False).eval()
    model.decoder = "solo"  # the handshake: this test reads the dense outputs itself
    with torch.no_grad():
        (scores, kernels, feats), _ = model(torch.rand(1, 3, 64, 96))
    assert scores.shape[:2] == kernels.shape[:2] and scores.shape[2] == 1 and feats.shape[-2:] == (16, 24)
    assert ((scores >= 0) & (scores <= 1)).all() and torch.isfinite(kernels).all() and torch.isfinite(feats).all()


@pytest.mark.parametrize("family", YOLO_SOLO)
def test_yolo_solo_rows_are_ultralytics_seg_rows(family):
    from ultralytics.cfg import ROOT

    ours, seg = load_model_yaml(f"{family}-solo.yaml"), YAML.load(ROOT / "cfg" / "models" / YOLO_SOLO[family])
    assert ours["backbone"] == seg["backbone"] and ours["head"][:-1] == seg["head"][:-1]
    assert ours["scales"] == seg["scales"]
    assert ours["head"][-1][3] == seg["head"][-1][3]  # [nc, nm, npr], scaled as Segment's


@pytest.mark.parametrize("family", YOLO_SOLO)
def test_every_yolo_solo_scale_mirrors_the_seg_model(family):
    """Trunk identical; head = Segment's class, mask-coefficient and Proto branches (SOLO's extra inputs aside)."""
    from ultralytics.nn.tasks import SegmentationModel

    params = []
    for scale in load_model_yaml(f"{family}-solo.yaml")["scales"]:
        for nc in (1, 80):
            model = SOLOv2Model(f"{family}{scale}-solo.yaml", nc=nc, verbose=False)
            seg = SegmentationModel(f"{family}{scale}-seg.yaml", nc=nc, verbose=False)
            head = f"model.{len(seg.model) - 1}."
            ours = {k: v.shape for k, v in model.state_dict().items()}
            theirs = {k: v.shape for k, v in seg.state_dict().items()}
            trunk = {k: v for k, v in ours.items() if not k.startswith(head)}
            assert trunk == {k: v for k, v in theirs.items() if not k.startswith(head)}, scale
            h = model.model[-1]
            assert h.f == ([2] if family == "yolo11" else []) + [16, 19, 22] and h.num_grids == [40, 20, 10]
            widened = {head + k: d for k, d in h.widened_params().items()}
            branches = [k for k in theirs if k.startswith(tuple(head + p for p in ("cv3.", "cv4.", "proto.")))]
            for k in branches:
                if ".semseg." in k:  # YOLO26's training-only semantic head: SOLO has none
                    assert k not in ours
                    continue
                expected = list(theirs[k])
                if k in widened:
                    expected[widened[k]] += 2  # two CoordConv input channels, or two cell-offset kernel weights
                assert list(ours[k]) == expected, (scale, nc, k)
            extra = {k for k in ours if k.startswith(head)} - set(branches)
            own = ("proto.feat_refine.", "proto.skip.")  # YOLO11's P4/P5 laterals and stride-4 skip
            assert all(k[len(head) :].startswith(own) for k in extra)
            assert (family == "yolo11") == bool(extra) == any(".skip." in k for k in extra)
        params.append(sum(p.numel() for p in model.parameters()))
    assert params == sorted(params)


def test_solo_block_errors_name_the_key_and_file(tmp_path):
    family = find_model_yaml("yolo11-solo.yaml")[0]
    cases = {
        "num_gridz": ("num_grids:", "num_gridz:", r"unknown 'solo' key\(s\) \['num_gridz'\] in .*bad.yaml"),
        "strides": ("  offsets: true", "  strides: [8, 16, 64]\n  offsets: true", r"'solo' strides \[8, 16, 64\] of"),
    }
    for name, (old, new, message) in cases.items():
        bad = tmp_path / f"{name}-bad.yaml"
        bad.write_text(family.read_text().replace(old, new, 1))
        with pytest.raises(ValueError, match=message):
            SOLOv2Model(str(bad), verbose=False)
    right = tmp_path / "right-strides.yaml"  # a YAML may state the head's strides
    right.write_text(family.read_text().replace("  offsets: true", "  strides: [8, 16, 32]\n  offsets: true", 1))
    assert SOLOv2Model(str(right), verbose=False).layout.strides == (8, 16, 32)
    solov2 = tmp_path / "solov2-offsets.yaml"  # the SOLOv2 head has no cell-offset weights
    solov2.write_text(find_model_yaml("solov2.yaml")[0].read_text().replace("solo:", "solo:\n  offsets: true", 1))
    with pytest.raises(ValueError, match=r"SOLOv2Head takes no 'solo' key\(s\) \['offsets'\]"):
        SOLOv2Model(str(solov2), verbose=False)


def test_an_eval_pass_needs_the_solo_decoder_handshake():
    from ultra_solo.models.solov2.network import solo_decoding

    model = SOLOv2Model("yolo11n-solo.yaml", nc=3, verbose=False).eval()
    x = torch.rand(1, 3, 64, 64)
    with pytest.raises(TypeError, match="is a SOLO model.*model.decoder = 'solo'"):
        model(x)
    with torch.no_grad(), solo_decoding(model):
        assert len(model(x)[0]) == 3  # dense outputs
    assert model.decoder is None  # marked for the block only
    model.train()(x)  # training passes never need it

"""Validator format self-test: ground truth encoded as SOLOv2 dense outputs must score (almost) perfect mAP.

At imgsz 640 every coco8-seg val instance is larger than the 8 px small-mask filter at stride 4 (two are not at 320).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ultralytics.data.utils import check_det_dataset
from ultralytics.utils import ops
from ultralytics.utils.metrics import SegmentMetrics

from ultra_solo.models.solov2.network import SOLOv2Model
from ultra_solo.models.solov2.val import SOLOMetrics, SOLOValidator
from ultra_solo.utils.masks import instance_masks


def ground_truth_as_dense_outputs(batch: dict, nc: int, num_cells: int):
    """Encode each GT instance as one grid cell whose 1x1 kernel selects a mask-feature channel equal to its mask.

    Instance k of an image sits on cell k (level 0, stride 8) with score 0.9 - 0.001 k for its class; mask feature
    channel k is +20 inside its GT mask and -20 outside, so the decoded mask is the GT mask exactly.
    """
    masks = instance_masks(batch["masks"], batch["batch_idx"], overlap=False)  # (N, h, w)
    b = batch["batch_idx"].long()
    k = torch.arange(len(b)) - torch.searchsorted(b, b)  # index within the image
    bs, e = batch["img"].shape[0], int(k.max()) + 1
    scores = torch.zeros(bs, num_cells, nc)
    scores[b, k, batch["cls"].view(-1).long()] = 0.9 - 0.001 * k.float()
    kernels = torch.zeros(bs, num_cells, e)
    kernels[b, k, k] = 1.0
    feats = torch.full((bs, e, *masks.shape[1:]), -20.0)
    feats[b, k] = torch.where(masks > 0, 20.0, -20.0)
    return scores, kernels, feats


@pytest.mark.parametrize("native", [False, True])  # masks at imgsz/4, or at input resolution (save_json/save_txt)
def test_ground_truth_scores_full_map(coco8, tmp_path, native):
    args = dict(data=str(coco8), imgsz=640, batch=4, plots=False, save_json=native)  # save_json: native masks
    validator = SOLOValidator(args=args, save_dir=tmp_path)
    validator.data = check_det_dataset(str(coco8))
    validator.stride, validator.device = 32, torch.device("cpu")
    model = SOLOv2Model("solov2-n.yaml", nc=80, verbose=False)
    model.names = validator.data["names"]
    validator.names = model.names
    validator.dataloader = validator.get_dataloader(validator.data["val"], 4)
    validator.init_metrics(model)
    assert validator.native_masks == native and (validator.process is ops.process_mask_native) == native
    for batch in validator.dataloader:
        batch = validator.preprocess(batch)
        preds = ground_truth_as_dense_outputs(batch, nc=80, num_cells=3872)
        validator.update_metrics(validator.postprocess(preds), batch)
    stats = validator.get_stats()
    assert validator.seen == 4
    assert stats["metrics/mAP50-95(M)"] >= 0.99
    assert stats["metrics/mAP50(B)"] >= 0.99  # boxes enclose the decoded masks
    assert stats["fitness"] == stats["metrics/mAP50-95(M)"]  # SOLOMetrics: best.pt by the masks alone


def test_fitness_is_mask_map_alone():
    """Ultralytics' segment fitness adds box and mask mAP50-95; SOLO's, whose boxes are its masks' extents, is the
    mask mAP50-95 alone, so best.pt is the epoch with the best masks."""
    metrics = SOLOMetrics()
    metrics.box.all_ap = np.full((1, 10), 0.4)  # (classes, IoU thresholds)
    metrics.seg.all_ap = np.linspace(0.2, 0.6, 10)[None]
    assert metrics.fitness == pytest.approx(0.4)
    assert metrics.results_dict["fitness"] == pytest.approx(0.4)
    assert SegmentMetrics.fitness.fget(metrics) == pytest.approx(0.8)  # what Ultralytics' own would say

"""DistributedDataParallel on 2 CPU processes (gloo): what SOLO owes Ultralytics' multi-GPU training, without a GPU.

Each rank trains a few steps on its own real batch of coco8-seg, built by Ultralytics' dataset and dataloader, with the
step Ultralytics' trainer takes (loss summed and multiplied by the world size, DDP averaging the gradients). Rank 0's
first batch has no instances, and rank 1's loss is made non-finite at the second step.
"""

from __future__ import annotations

import os
import socket
import time
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from ultralytics.utils.torch_utils import TORCH_2_13

from .conftest import DATASETS

WORLD = 2
STEPS = 3
EMPTY = (0, 0)  # (step, rank) whose batch holds no instance
POISONED = (1, 1)  # (step, rank) whose loss is made non-finite
BATCH = 2  # images per rank and step
LR = 0.01
TIMEOUT_S = 240  # a hang fails the test instead of stalling the suite


def poisoned_loss(model, calls: set[int]):
    """SOLO's criterion, with a NaN loss on the given (0-based) calls: an fp16 overflow or a corrupt batch."""
    from ultra_solo.models.solov2.loss import SOLOv2Loss

    class PoisonedLoss(SOLOv2Loss):
        def __call__(self, preds, batch):
            loss, items = super().__call__(preds, batch)
            self.calls = getattr(self, "calls", 0) + 1
            return (loss * float("nan"), items) if self.calls - 1 in calls else (loss, items)

    return PoisonedLoss(model)


def build_model(cfg: str, poison: set[int]):
    """A SOLO model with the same initial weights on every rank, training arguments as the trainer gives it."""
    from ultralytics.cfg import get_cfg

    from ultra_solo.models.solov2.network import SOLOv2Model

    torch.manual_seed(0)
    model = SOLOv2Model(cfg, nc=80, verbose=False)
    model.args = get_cfg(overrides={"overlap_mask": False})
    model.criterion = poisoned_loss(model, poison)
    return model.train()


def real_batches(imgsz: int) -> list[dict]:
    """coco8-seg's 8 images as 4 batches of 2 from Ultralytics' dataset and dataloader (letterboxed, not augmented)."""
    from ultralytics.cfg import get_cfg
    from ultralytics.data import build_dataloader, build_yolo_dataset
    from ultralytics.data.utils import check_det_dataset

    data = check_det_dataset(str(DATASETS / "coco8-seg" / "data.yaml"))
    cfg = get_cfg(overrides={"imgsz": imgsz, "overlap_mask": False, "task": "segment"})
    batches = []
    for split in ("train", "val"):
        dataset = build_yolo_dataset(cfg, data[split], BATCH, data, mode="val", stride=32)
        batches += list(build_dataloader(dataset, BATCH, workers=0, shuffle=False, rank=-1))
    for b in batches:
        b["img"] = b["img"].float() / 255
    return batches


def without_instances(batch: dict) -> dict:
    """The same images with every label removed."""
    h, w = batch["masks"].shape[1:]
    return {
        **batch,
        "cls": batch["cls"][:0],
        "bboxes": batch["bboxes"][:0],
        "batch_idx": batch["batch_idx"][:0],
        "masks": batch["masks"].new_zeros(0, h, w),
    }


def rank_batch(batches: list[dict], step: int, rank: int) -> dict:
    """The batch rank `rank` trains on at `step`."""
    batch = batches[(step * WORLD + rank) % len(batches)]
    return without_instances(batch) if (step, rank) == EMPTY else batch


def poison_calls(rank: int) -> set[int]:
    """Which of a rank's criterion calls (one per step) return NaN."""
    return {POISONED[0]} if rank == POISONED[1] else set()


def flat_params(model) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def train_rank(rank: int, cfg: str, imgsz: int, port: int, out: str) -> None:
    """One DDP rank: the trainer's step, parameters compared across ranks after every step."""
    os.environ.update(OMP_NUM_THREADS="1")
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD, timeout=timedelta(seconds=120)
    )
    try:
        model = build_model(cfg, poison_calls(rank))
        # Ultralytics' wrapping (BaseTrainer._setup_train) but stricter: no find_unused_parameters, every parameter used
        no_buffer_sync = {"forward_sync_buffers" if TORCH_2_13 else "broadcast_buffers": False}
        ddp = torch.nn.parallel.DistributedDataParallel(model, **no_buffer_sync)
        optimizer = torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9)
        batches = real_batches(imgsz)
        losses, identical = [], []
        for step in range(STEPS):
            loss, _ = ddp(rank_batch(batches, step, rank))
            loss = loss.sum() * WORLD  # BaseTrainer: loss.sum(), times world_size under DDP
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            params = flat_params(model)
            gathered = [torch.empty_like(params) for _ in range(WORLD)]
            dist.all_gather(gathered, params)
            losses.append(loss.item())
            identical.append(all(torch.equal(gathered[0], g) for g in gathered[1:]))
        torch.save(
            {"losses": losses, "identical": identical, "skipped": model.criterion.skipped, "params": params},
            Path(out) / f"rank{rank}.pt",
        )
    finally:
        dist.destroy_process_group()


def single_process_reference(cfg: str, imgsz: int) -> torch.Tensor:
    """What DDP must compute, in one process: each step, the ranks' losses (times batch size) summed, then the step.

    Run on one thread, as the ranks are: the same sums in the same order, so the parameters must agree to the bit.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = build_model(cfg, set())
        criteria = [poisoned_loss(model, poison_calls(r)) for r in range(WORLD)]  # each rank's own (poisoned) calls
        optimizer = torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9)
        batches = real_batches(imgsz)
        for step in range(STEPS):
            optimizer.zero_grad()
            for rank in range(WORLD):
                model.criterion = criteria[rank]
                loss, _ = model.loss(rank_batch(batches, step, rank))
                loss.sum().backward()
            optimizer.step()
        return flat_params(model)
    finally:
        torch.set_num_threads(threads)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize(("cfg", "imgsz"), [("yolo11n-solo.yaml", 64), ("solov2-n.yaml", 64)])
def test_ddp_on_two_cpu_processes(cfg, imgsz, tmp_path):
    ctx = mp.start_processes(
        train_rank, args=(cfg, imgsz, free_port(), str(tmp_path)), nprocs=WORLD, join=False, start_method="spawn"
    )
    deadline = time.monotonic() + TIMEOUT_S
    while not ctx.join(timeout=5):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                p.terminate()
            pytest.fail(f"DDP training of {cfg} hung for more than {TIMEOUT_S} s")
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]

    for r, result in enumerate(ranks):
        assert result["identical"] == [True] * STEPS, f"rank {r}: parameters differ across ranks after a step"
        assert result["skipped"] == (1 if r == POISONED[1] else 0), "one skipped batch, counted on its own rank"
    assert ranks[POISONED[1]]["losses"][POISONED[0]] == 0.0  # the skipped batch contributes a zero loss
    assert all(torch.isfinite(torch.tensor(r["losses"])).all() for r in ranks)

    reference = single_process_reference(cfg, imgsz)
    assert torch.equal(ranks[0]["params"], reference), "DDP's step differs from the sum of the ranks' losses"

"""What a checkpoint gives a SOLO model: every tensor whose name and shape match, and a YOLO-seg head's branches.

`SOLOPANHead` is built with `Segment`'s module names and widths (`pan_head.py`), so a YOLO-seg checkpoint on the same
trunk matches it by name as Ultralytics' own `intersect_dicts` matches YOLO models. Three things are SOLO's own:
- tensors SOLO widened by two entries (CoordConv input channels, cell-offset kernel weights) take the YOLO tensor in
  their leading slice and keep zero weights in the rest, so they add nothing at transfer; the cell-offset biases keep
  their initial `offset_bias` (0: nothing either; negative: a soft crop around each cell instead of YOLO's box crop);
- when nc differs from the checkpoint's, the category branches are rebuilt at the checkpoint's hidden width first, as
  Ultralytics' `BaseModel.load` rebuilds YOLO's, so everything but the last 1x1 transfers;
- a report per part (trunk, category, kernels, mask features), what did not fit and what the checkpoint had that SOLO
  does not use (the box branch, YOLO26's one-to-one branches and semantic head).
With the `solo` setting `transfer_head: false` only the trunk transfers (the head keeps SOLO's initialisation).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn
from ultralytics.utils.torch_utils import intersect_dicts

HEAD_PARTS = {"cv3": "category", "cv4": "kernels", "proto": "mask features"}  # SOLOPANHead's, named as in Segment
UNUSED_PARTS = {  # checkpoint head modules SOLO has no part for
    "cv2": "box branch",
    "dfl": "box DFL",
    "one2one_cv2": "one-to-one box branch",
    "one2one_cv3": "one-to-one class branch",
    "one2one_cv4": "one-to-one mask-coefficient branch",
    "proto.semseg": "semantic head",
}


@dataclass
class TransferReport:
    """Counts of what a load transferred, per part of the model.

    Attributes:
        source (str): What the weights came from (class and file).
        parts (dict[str, list[int]]): Part name -> [transferred, total, SOLO's own] tensors of the SOLO model; SOLO's
            own have no namesake in the checkpoint (e.g. the P4/P5 laterals of YOLO11 models' mask features).
        padded (int): Head tensors that took a checkpoint tensor in their leading slice (zero CoordConv / offsets).
        misfits (list[str]): SOLO tensors whose checkpoint namesake has another shape, with both shapes.
        unused (dict[str, int]): Checkpoint head parts SOLO does not use -> their tensor count.
        trunk_only (bool): The head was left out on purpose (`transfer_head: false`).
        offset_bias (tuple[float, float]): The cell-offset biases the widened kernels start at (`offset_bias`).
    """

    source: str
    parts: dict[str, list[int]] = field(default_factory=dict)
    padded: int = 0
    misfits: list[str] = field(default_factory=list)
    unused: dict[str, int] = field(default_factory=dict)
    trunk_only: bool = False
    offset_bias: tuple[float, float] = (0.0, 0.0)

    def summary(self) -> str:
        """One line: the counts per part (compare's `weights` column reads it)."""
        counts = ", ".join(
            f"{part} {n}/{total}" + (f" ({new} SOLO's own)" if new else "")
            for part, (n, total, new) in self.parts.items()
        )
        padded = f"; {self.padded} of them widened with zeros (CoordConv inputs, cell offsets)" if self.padded else ""
        if self.padded and any(self.offset_bias):
            padded += f", cell-offset biases at offset_bias {list(self.offset_bias)}"
        trunk_only = " (trunk only: transfer_head false)" if self.trunk_only else ""
        return f"{self.source}: {counts}{padded}{trunk_only}"

    def details(self) -> str:
        """What did not fit and what SOLO left unused, for the log."""
        lines = []
        if self.misfits:
            more = len(self.misfits) - 6
            shown = "; ".join(self.misfits[:6]) + (f"; ... {more} more" if more > 0 else "")
            lines.append(f"did not fit ({len(self.misfits)}, kept SOLO's initialisation): {shown}")
        if self.unused:
            lines.append("not used by SOLO: " + ", ".join(f"{part} ({n} tensors)" for part, n in self.unused.items()))
        return "\n".join(lines)


def part_of(key: str, head_prefix: str) -> str:
    """The part a state-dict key of a SOLO model belongs to: 'trunk', a `HEAD_PARTS` name, or 'head'."""
    if not key.startswith(head_prefix):
        return "trunk"
    return HEAD_PARTS.get(key[len(head_prefix) :].split(".")[0], "head")


def widened(own: torch.Tensor, src: torch.Tensor, dim: int) -> torch.Tensor | None:
    """`src` in the leading slice of a tensor shaped like `own`, if they differ only in `dim`, own the wider; the rest
    is zero for weights and `own`'s own entries for biases (the cell-offset biases: `SOLOSettings.offset_bias`)."""
    if own.ndim != src.ndim or own.shape[dim] <= src.shape[dim]:
        return None
    if any(a != b for i, (a, b) in enumerate(zip(own.shape, src.shape)) if i != dim):
        return None
    out = own.clone() if own.ndim == 1 else torch.zeros_like(own)
    out.narrow(dim, 0, src.shape[dim]).copy_(src)
    return out


def match_category_width(head: nn.Module, src_head: nn.Module) -> None:
    """Rebuild a SOLO head's category branches at the checkpoint's hidden width (nc differs), as `BaseModel.load`."""
    rebuild, dst, src = getattr(head, "rebuild_category", None), getattr(head, "cv3", None), getattr(src_head, "cv3", 0)
    if rebuild is None or not isinstance(src, nn.ModuleList) or len(src) != len(dst):
        return
    try:
        same_inputs = [b[0][0].conv.in_channels for b in src] == [b[0][0].conv.in_channels for b in dst]
        c3 = src[0][-1].in_channels
    except (AttributeError, IndexError, TypeError):  # a legacy (full 3x3) class branch: nothing of the same shape
        return
    if same_inputs and c3 != dst[0][-1].in_channels:
        rebuild(c3)


def transfer(model: nn.Module, source: nn.Module, with_head: bool = True) -> TransferReport:
    """Load `source`'s weights into the SOLO `model` (module docstring) and return what went where.

    Args:
        model (nn.Module): A `SOLOv2Model`.
        source (nn.Module): The checkpoint's model (YOLO or SOLO), already in float.
        with_head (bool): Transfer the head's branches too, not only the trunk.

    Returns:
        (TransferReport): The counts per part.
    """
    head, src_head = model.model[-1], getattr(source, "model", [None])[-1]
    head_prefix = f"model.{len(model.model) - 1}."
    if with_head and src_head is not None:
        match_category_width(head, src_head)
    own, full = model.state_dict(), source.state_dict()
    csd = full if with_head else {k: v for k, v in full.items() if not k.startswith(head_prefix)}
    take = intersect_dicts(csd, own)
    widen = {head_prefix + k: d for k, d in getattr(head, "widened_params", dict)().items()}
    name = f"{type(source).__name__} checkpoint {getattr(source, 'pt_path', None) or ''}".rstrip()
    report = TransferReport(name, trunk_only=not with_head, offset_bias=model.settings.offset_bias)
    for k, v in own.items():
        if k in csd and k not in take:
            w = widened(v, csd[k], widen[k]) if k in widen else None
            if w is None:
                report.misfits.append(f"{k} {tuple(csd[k].shape)} vs {tuple(v.shape)}")
            else:
                take[k] = w
                report.padded += 1
        counts = report.parts.setdefault(part_of(k, head_prefix), [0, 0, 0])
        counts[0] += k in take
        counts[1] += 1
        counts[2] += k not in full
    model.load_state_dict(take, strict=False)
    for k in full:
        local = k[len(head_prefix) :] if k.startswith(head_prefix) else None
        part = next((name for p, name in UNUSED_PARTS.items() if local and local.startswith(p + ".")), None)
        if part and k not in own:
            report.unused[part] = report.unused.get(part, 0) + 1
    return report

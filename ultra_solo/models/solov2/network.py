"""SOLOv2 network: backbone rows built by Ultralytics' `parse_model`, then the SOLOv2 head."""

from __future__ import annotations

from copy import deepcopy
from pathlib import Path

import thop
import torch
from ultralytics.nn.tasks import BaseModel, parse_model
from ultralytics.utils import LOGGER
from ultralytics.utils.torch_utils import model_info

from .backbone import load_imagenet_weights
from .cfg import load_model_yaml, resolve_scale
from .export import metadata_solo
from .head import SOLOv2Head

HEAD_STRIDES = (4, 8, 16, 32)  # strides of the four backbone features the head takes (C2-C5)


class SOLOv2Model(BaseModel):
    """SOLOv2 instance segmentation model.

    The YAML's backbone rows (any Ultralytics, `nn.*` or `TorchVision` rows) are built by `parse_model`; its last head
    row names `SOLOv2Head` and the four features it reads, and is built here, so `forward`, `fuse`, `info` and `load`
    of `BaseModel` work unchanged.

    Attributes:
        yaml (dict): Model dict, including the `solo` constants block.
        stride (torch.Tensor): Head level strides.
        names (dict[int, str]): Class names.
    """

    def __init__(self, cfg: str | Path | dict = "solov2-n.yaml", ch: int = 3, nc: int | None = None, verbose=True):
        """Build the model.

        Args:
            cfg (str | Path | dict): Model YAML name or path (e.g. 'solov2-n.yaml'), or an already loaded model dict.
            ch (int): Input channels.
            nc (int, optional): Number of classes, overriding the YAML's `nc`.
            verbose (bool): Print the layer table and model summary.
        """
        super().__init__()
        self.yaml = deepcopy(cfg) if isinstance(cfg, dict) else load_model_yaml(cfg)
        self.yaml["channels"] = ch
        if nc and nc != self.yaml["nc"]:
            LOGGER.info(f"Overriding model.yaml nc={self.yaml['nc']} with nc={nc}")
            self.yaml["nc"] = nc
        d = resolve_scale(self.yaml)
        *rows, head_row = d["head"]
        self.model, self.save = parse_model({**d, "head": rows}, ch=ch, verbose=verbose)
        self.model.append(self._build_head(head_row, ch))
        self.save = sorted({*self.save, *head_row[0]})
        mean, std = d.get("pixel_mean", [0.0] * ch), d.get("pixel_std", [1.0] * ch)
        self.register_buffer("pixel_mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)
        self.stride = torch.tensor(self.yaml["solo"]["strides"], dtype=torch.float32)
        self.names = {i: f"{i}" for i in range(self.yaml["nc"])}
        self.task = "segment"
        if verbose:
            self.info()
            LOGGER.info("")

    def _build_head(self, row: list, ch: int) -> SOLOv2Head:
        """Build the SOLOv2 head from its YAML row, reading the input widths off a dry run of the backbone."""
        f, _, name, args = row
        if name != "SOLOv2Head" or not isinstance(f, list) or len(f) != len(HEAD_STRIDES):
            raise ValueError(f"the last head row must be [[C2, C3, C4, C5], 1, SOLOv2Head, [...]], got {row}")
        size = 256
        feats = self._backbone_features(torch.zeros(1, ch, size, size), f)
        strides = tuple(size // x.shape[-1] for x in feats)
        if strides != HEAD_STRIDES:
            raise ValueError(f"SOLOv2Head inputs {f} have strides {strides}; they must be {HEAD_STRIDES}")
        head = SOLOv2Head([x.shape[1] for x in feats], *args, num_grids=self.yaml["solo"]["num_grids"])
        head.i, head.f, head.type = len(self.model), f, "SOLOv2Head"
        head.np = sum(p.numel() for p in head.parameters())
        return head

    @torch.no_grad()
    def _backbone_features(self, x: torch.Tensor, indices: list[int]) -> list[torch.Tensor]:
        """Run the rows built so far in eval mode on `x` and return the outputs of rows `indices`."""
        outputs = {}
        hooks = [self.model[i].register_forward_hook(lambda m, a, y, i=i: outputs.setdefault(i, y)) for i in indices]
        training = self.model.training
        self.model.eval()
        try:
            BaseModel._predict_once(self, x)
        finally:
            self.model.train(training)
            for h in hooks:
                h.remove()
        return [outputs[i] for i in indices]

    def _predict_once(self, x: torch.Tensor, profile: bool = False, embed: list | None = None):
        """Normalise the 0-1 RGB input as the backbone weights expect, then run `BaseModel`'s forward."""
        return super()._predict_once((x - self.pixel_mean) / self.pixel_std, profile, embed)

    def info(self, detailed: bool = False, verbose: bool = True, imgsz: int | list[int] = 640):
        """Print and return (layers, parameters, gradients, GFLOPs).

        GFLOPs are profiled at the full input size: the head's grid convolutions cost the same at any input size, so
        Ultralytics' extrapolation from stride-sized proxy images does not apply.
        """
        if detailed:
            model_info(self, detailed=True, verbose=verbose, imgsz=imgsz)
        n_l = len(list(self.modules()))
        n_p = sum(p.numel() for p in self.parameters())
        n_g = sum(p.numel() for p in self.parameters() if p.requires_grad)
        p = next(self.parameters())
        h, w = imgsz if isinstance(imgsz, (list, tuple)) else (imgsz, imgsz)
        im = torch.empty(1, self.yaml["channels"], h, w, device=p.device, dtype=p.dtype)
        flops = thop.profile(self, inputs=[im], verbose=False)[0] / 1e9 * 2
        if verbose:
            name = Path(self.yaml.get("yaml_file", "")).stem or "SOLOv2"
            LOGGER.info(f"{name} summary: {n_l:,} layers, {n_p:,} parameters, {n_g:,} gradients, {flops:.1f} GFLOPs")
        return n_l, n_p, n_g, flops

    def set_head_attr(self, **kwargs):
        """Accept the trainer's head settings (`max_det`): SOLO decoding reads them from the run's arguments."""

    def load_pretrained_backbone(self, pretrained: bool | str | Path = True) -> int:
        """Load ImageNet weights into the model's torchvision backbone rows; see `backbone.load_imagenet_weights`."""
        return load_imagenet_weights(self, pretrained)

    def init_criterion(self):
        """Return the SOLOv2 loss."""
        from .loss import SOLOv2Loss

        return SOLOv2Loss(self)

    def loss(self, batch: dict, preds=None):
        """Compute the loss; a non-finite one (fp16 overflow, a corrupt batch) is skipped and counted.

        The skipped batch returns a zero loss that still reaches every parameter (so DDP sees all of them) with zero
        gradient, and zero loss items; the criterion reports the count once per epoch (`SOLOv2Loss.update`).
        """
        loss, items = super().loss(batch, preds)
        if torch.isfinite(loss).all():
            return loss, items
        self.criterion.skipped += 1
        zero = torch.stack([p.view(-1)[0] for p in self.parameters() if p.requires_grad]).sum() * 0.0
        return zero, {k: torch.zeros_like(v) for k, v in items.items()}


def solo_config(model) -> dict:
    """Return the `solo` constants of a SOLO model: given directly, wrapped in Ultralytics' AutoBackend, or exported."""
    for m in (model, getattr(model, "model", None)):
        yaml = getattr(m, "yaml", None)
        if isinstance(yaml, dict) and "solo" in yaml:
            return yaml["solo"]
    solo = metadata_solo(getattr(model, "metadata", None) or {})
    if solo:
        return solo
    raise TypeError(f"{type(model).__name__} is not a SOLO model: it carries no 'solo' constants")


def register_safe_globals() -> None:
    """Allow the classes a SOLO checkpoint pickles under `ULTRALYTICS_SAFE_LOAD=1` (`torch.load(weights_only=True)`)."""
    from torchvision.models.resnet import BasicBlock, Bottleneck
    from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork, LastLevelMaxPool
    from torchvision.ops.misc import Conv2dNormActivation

    from .head import InstanceBranch, MaskFeatureBranch

    torch.serialization.add_safe_globals(
        [SOLOv2Model, SOLOv2Head, InstanceBranch, MaskFeatureBranch, FeaturePyramidNetwork, LastLevelMaxPool,
         Conv2dNormActivation, BasicBlock, Bottleneck]
    )  # fmt: skip


register_safe_globals()

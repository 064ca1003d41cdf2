"""SOLOv2 network: backbone rows built by Ultralytics' `parse_model`, then the SOLOv2 head."""

from __future__ import annotations

import sys
from copy import deepcopy
from pathlib import Path

import thop
import torch
from ultralytics.engine.predictor import BasePredictor
from ultralytics.engine.validator import BaseValidator
from ultralytics.nn.modules import TorchVision
from ultralytics.nn.tasks import BaseModel, parse_model
from ultralytics.utils import LOGGER
from ultralytics.utils.torch_utils import initialize_weights, model_info

from .backbone import load_imagenet_weights
from .cfg import load_model_yaml, resolve_scale
from .export import metadata_solo
from .head import SOLOHead, SOLOv2Head
from .pan_head import SOLOPANHead

HEADS: dict[str, type[SOLOHead]] = {"SOLOv2Head": SOLOv2Head, "SOLOPANHead": SOLOPANHead}


class SOLOv2Model(BaseModel):
    """SOLOv2 instance segmentation model.

    The YAML's backbone and neck rows (any Ultralytics, `nn.*` or `TorchVision` rows) are built by `parse_model`, with
    Ultralytics' weight initialisation (torchvision rows keep theirs); its last head row names a SOLO head (`HEADS`) and
    the features it reads, and is built here, so `forward`, `fuse`, `info` and `load` of `BaseModel` work unchanged.

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
        for m in self.model:
            if not isinstance(m, TorchVision):  # Ultralytics' BatchNorm settings, as every YOLO model gets
                initialize_weights(m)
        for key in ("pixel_mean", "pixel_std"):  # None: the trunk takes Ultralytics' 0-1 input as it is
            value = torch.tensor(d[key]).view(1, -1, 1, 1) if key in d else None
            self.register_buffer(key, value, persistent=False)
        self.stride = torch.tensor(self.yaml["solo"]["strides"], dtype=torch.float32)
        self.names = {i: f"{i}" for i in range(self.yaml["nc"])}
        self.task = "segment"
        self.weights_source = "scratch"  # what `load` or `load_pretrained_backbone` transferred; kept in checkpoints
        if verbose:
            self.info()
            LOGGER.info("")

    def _build_head(self, row: list, ch: int) -> SOLOHead:
        """Build the SOLO head of the YAML's last row, reading its input widths off a dry run of the rows before it."""
        f, _, name, args = row
        if name not in HEADS or not isinstance(f, list):
            raise ValueError(f"the last head row must be [[inputs...], 1, HEAD, [...]], HEAD in {list(HEADS)}: {row}")
        size = 256
        feats = self._backbone_features(torch.zeros(1, ch, size, size), f)
        strides = tuple(size // x.shape[-1] for x in feats)
        if strides not in HEADS[name].in_strides:
            raise ValueError(f"{name} inputs {f} have strides {strides}; they must be one of {HEADS[name].in_strides}")
        solo = self.yaml["solo"]
        extra = {k: True for k in ("offsets", "depthwise_cls") if solo.get(k)}  # only heads made for them take these
        head = HEADS[name]([x.shape[1] for x in feats], *args, num_grids=solo["num_grids"], **extra)
        head.i, head.f, head.type = len(self.model), f, name
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
        """Normalise the 0-1 RGB input as torchvision backbone weights expect (when the YAML sets `pixel_mean`), then
        run `BaseModel`'s forward; refuse to serve YOLO's decoding (see `check_decoder`)."""
        if not self.training and self.model[-1].export is None:
            check_decoder(self)
        if self.pixel_mean is not None:
            x = (x - self.pixel_mean) / self.pixel_std
        return super()._predict_once(x, profile, embed)

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

    def load(self, weights, verbose: bool = True):
        """Transfer every tensor whose name and shape match (`BaseModel.load`) and log what the trunk and head got.

        A YOLO-seg checkpoint on the same trunk (e.g. `yolo11n-seg.pt` into `yolo11n-solo.yaml`) fills every trunk
        tensor; the SOLO head then starts from scratch.
        """
        source = (weights.get("ema") or weights["model"]) if isinstance(weights, dict) else weights
        csd = source.state_dict()
        head = f"model.{len(self.model) - 1}."
        own = self.state_dict()
        hits = {k for k, v in own.items() if k in csd and csd[k].shape == v.shape}
        trunk = [k for k in own if not k.startswith(head)]
        super().load(weights, verbose)
        self.weights_source = (
            f"{type(source).__name__} checkpoint: {sum(k in hits for k in trunk)}/{len(trunk)} trunk and "
            f"{sum(k.startswith(head) for k in hits)}/{len(own) - len(trunk)} head tensors"
        )
        LOGGER.info(f"Pretrained weights from a {self.weights_source}")
        return self

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


def check_decoder(model: SOLOv2Model) -> None:
    """Refuse an eval forward pass run by a non-SOLO Ultralytics predictor or validator.

    `YOLO("solo_best.pt")` and `yolo predict model=solo_best.pt` load a SOLO checkpoint into YOLO's segmentation
    predictor, which reads SOLO's outputs as YOLO boxes and reports no detections without a word. The nearest predictor
    or validator up the call stack tells which decoding will read this pass: SOLO's declare `decodes_solo`.

    Raises:
        TypeError: Naming SOLO and the command to use instead.
    """
    frame = sys._getframe(1)
    for _ in range(40):  # AutoBackend and nn.Module calls lie between the predictor and this frame
        if frame is None:
            return
        caller = frame.f_locals.get("self")
        if isinstance(caller, (BasePredictor, BaseValidator)):
            if getattr(caller, "decodes_solo", False):
                return
            path = getattr(model, "pt_path", None) or "best.pt"
            raise TypeError(
                f"'{path}' is a SOLO model; {type(caller).__name__} decodes YOLO outputs and would find nothing. "
                f"Load it with ultra-solo: `from ultra_solo import SOLO; SOLO('{path}')`, or on the command line "
                f"`ultra-solo segment predict model={path} source=...` (val, track and export likewise)"
            )
        frame = frame.f_back


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
    from .pan_head import GridBranch, PANMaskBranch

    torch.serialization.add_safe_globals(
        [SOLOv2Model, SOLOv2Head, InstanceBranch, MaskFeatureBranch, FeaturePyramidNetwork, LastLevelMaxPool,
         Conv2dNormActivation, BasicBlock, Bottleneck, SOLOPANHead, GridBranch, PANMaskBranch]
    )  # fmt: skip


register_safe_globals()

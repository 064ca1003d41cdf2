"""SOLOv2 network: backbone rows built by Ultralytics' `parse_model`, then the SOLOv2 head."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from copy import deepcopy
from pathlib import Path

import thop
import torch
from ultralytics.nn.modules import TorchVision
from ultralytics.nn.tasks import BaseModel, parse_model
from ultralytics.utils import LOGGER
from ultralytics.utils.torch_utils import initialize_weights, model_info

from .backbone import load_imagenet_weights
from .cfg import load_model_yaml, resolve_scale
from .decode import DecodeSettings
from .head import SOLOHead, SOLOv2Head
from .layout import GridLayout
from .pan_head import SOLOPANHead, SOLOPANHead26, SOLOPANHeadP2
from .settings import SOLOSettings, settings_from_metadata

HEADS: dict[str, type[SOLOHead]] = {h.__name__: h for h in (SOLOv2Head, SOLOPANHead, SOLOPANHead26, SOLOPANHeadP2)}


class SOLOv2Model(BaseModel):
    """SOLOv2 instance segmentation model.

    The YAML's backbone and neck rows (any Ultralytics, `nn.*` or `TorchVision` rows) are built by `parse_model`, with
    Ultralytics' weight initialisation (torchvision rows keep theirs); its last head row names a SOLO head (`HEADS`) and
    the features it reads, and is built here, so `forward`, `fuse`, `info` and `load` of `BaseModel` work unchanged.

    Attributes:
        yaml (dict): Model dict, including the `solo` constants block.
        stride (torch.Tensor): Head level strides.
        names (dict[int, str]): Class names.
        decoder (str | None): What reads this model's eval outputs: 'solo' on the model a SOLO predictor, validator or
            exporter runs (`decoded_by_solo`). An eval forward pass of an unmarked model is refused, so that YOLO's
            predictor and validator (`YOLO("solo_best.pt")`) cannot read SOLO's outputs as YOLO boxes. Set it to 'solo'
            to read the dense outputs yourself. Copies keep it; checkpoints never carry it (`decoded_by_solo`).
    """

    decoder: str | None = None

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
        self.model.append(self._build_head(head_row, ch, self.settings, d["scales"][d["scale"]]))
        self.save = sorted({*self.save, *head_row[0]})
        for m in self.model:
            if not isinstance(m, TorchVision):  # Ultralytics' BatchNorm settings, as every YOLO model gets
                initialize_weights(m)
        for key in ("pixel_mean", "pixel_std"):  # None: the trunk takes Ultralytics' 0-1 input as it is
            value = torch.tensor(d[key]).view(1, -1, 1, 1) if key in d else None
            self.register_buffer(key, value, persistent=False)
        self.stride = torch.tensor(self.layout.strides, dtype=torch.float32)
        self.names = {i: f"{i}" for i in range(self.yaml["nc"])}
        self.task = "segment"
        self.weights_source = "scratch"  # what `load` or `load_pretrained_backbone` transferred; kept in checkpoints
        if verbose:
            self.info()
            LOGGER.info("")

    def _build_head(self, row: list, ch: int, settings: SOLOSettings, scale: list[float]) -> SOLOHead:
        """Build the SOLO head of the YAML's last row, reading its input widths off a dry run of the rows before it.

        A head with `scale_args` scales its row's arguments by the model's `[depth, width, max_channels]` itself.
        """
        f, _, name, args = row
        if name not in HEADS or not isinstance(f, list):
            raise ValueError(f"the last head row must be [[inputs...], 1, HEAD, [...]], HEAD in {list(HEADS)}: {row}")
        cls, size = HEADS[name], 256
        feats = self._backbone_features(torch.zeros(1, ch, size, size), f)
        strides = tuple(size // x.shape[-1] for x in feats)
        if strides != cls.in_strides:
            raise ValueError(f"{name} inputs {f} have strides {strides}; they must be {cls.in_strides}")
        if hasattr(cls, "scale_args"):
            args = cls.scale_args(args, *scale[1:])
        head = cls([x.shape[1] for x in feats], *args, **cls.settings_kwargs(settings))
        if settings.strides is not None and settings.strides != head.layout.strides:
            raise ValueError(
                f"'solo' strides {list(settings.strides)} of {self.yaml.get('yaml_file')} are not {name}'s level "
                f"strides {list(head.layout.strides)}; leave the key out (the head knows its strides)"
            )
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

    @property
    def settings(self) -> SOLOSettings:
        """The model YAML's `solo` block, read (`SOLOSettings.from_dict`)."""
        return SOLOSettings.from_dict(self.yaml["solo"], str(self.yaml.get("yaml_file") or "model YAML"))

    @property
    def layout(self) -> GridLayout:
        """The head's grid and kernel layout."""
        return self.model[-1].layout

    def _predict_once(self, x: torch.Tensor, profile: bool = False, embed: list | None = None):
        """Normalise the 0-1 RGB input as torchvision backbone weights expect (when the YAML sets `pixel_mean`), then
        run `BaseModel`'s forward; an eval pass needs the `decoder` handshake (class docstring)."""
        if not self.training and self.decoder != "solo" and self.model[-1].export is None:
            raise TypeError(refusal(self))
        if self.pixel_mean is not None:
            x = (x - self.pixel_mean) / self.pixel_std
        return super()._predict_once(x, profile, embed)

    def fuse(self, verbose: bool = True, imgsz: int = 640):
        """`BaseModel.fuse`, which also removes the head's training-only parts (`SOLOPANHead.fuse`), as it removes YOLO
        heads' through `Detect.fuse`."""
        if hasattr(self.model[-1], "fuse"):
            self.model[-1].fuse()
        return super().fuse(verbose, imgsz)

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
        with solo_decoding(self):
            flops = thop.profile(self, inputs=[im], verbose=False)[0] / 1e9 * 2
        if verbose:
            name = Path(self.yaml.get("yaml_file", "")).stem or "SOLOv2"
            LOGGER.info(f"{name} summary: {n_l:,} layers, {n_p:,} parameters, {n_g:,} gradients, {flops:.1f} GFLOPs")
        return n_l, n_p, n_g, flops

    def set_head_attr(self, **kwargs):
        """Accept the trainer's head settings (`max_det`): SOLO decoding reads them from the run's arguments."""

    def load(self, weights, verbose: bool = True):
        """Transfer a checkpoint's weights, a YOLO-seg checkpoint's head included, and log what each part got.

        Every tensor whose name and shape match transfers; SOLO's widened tensors and a different nc are handled as
        `transfer.py` describes (the `solo` setting `transfer_head: false` takes the trunk only). The counts per part
        are logged and kept in `weights_source` (checkpoints and compare's report carry them).
        """
        from .transfer import transfer

        source = (weights.get("ema") or weights["model"]) if isinstance(weights, dict) else weights
        report = transfer(self, source.float(), with_head=self.settings.transfer_head)
        self.weights_source = report.summary()
        if verbose:
            LOGGER.info(f"Transferred from a {self.weights_source}")
            if details := report.details():
                LOGGER.info(details)
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


def refusal(model: SOLOv2Model) -> str:
    """Why an eval pass of a model no SOLO decoder set up is refused, and what to run instead."""
    path = getattr(model, "pt_path", None) or "best.pt"
    return (
        f"'{path}' is a SOLO model and no SOLO predictor or validator set up this pass (YOLO's would read its outputs "
        f"as boxes and find nothing). Load it with ultra-solo: `from ultra_solo import SOLO; SOLO('{path}')`, or on "
        f"the command line `ultra-solo segment predict model={path} source=...` (val, track and export likewise). To "
        f"read its dense outputs yourself, set model.decoder = 'solo'"
    )


def solo_model(model) -> SOLOv2Model | None:
    """The SOLOv2Model of `model`: itself, or the one inside Ultralytics' AutoBackend; None for exports and others."""
    for m in (model, getattr(model, "model", None)):
        if isinstance(m, SOLOv2Model):
            return m
    return None


def decoded_by_solo(model) -> None:
    """The handshake: mark the model a SOLO predictor or validator set up for itself as read by SOLO's decoding.

    Only a SOLO component's own copy is marked for good (Ultralytics' predictor and standalone validator deep-copy the
    model they are given); a model that may be saved afterwards, such as the trainer's EMA, is marked only for as long
    as SOLO reads it (`solo_decoding`), so no checkpoint carries the mark.
    """
    if (m := solo_model(model)) is not None:
        m.decoder = "solo"


@contextmanager
def solo_decoding(model) -> Iterator[None]:
    """Mark a SOLO model as read by SOLO's decoding for the duration of the block (`decoded_by_solo`)."""
    m = solo_model(model)
    if m is None:
        yield
        return
    before, m.decoder = m.decoder, "solo"
    try:
        yield
    finally:
        m.decoder = before


def decode_settings(model) -> DecodeSettings:
    """SOLO decoding of a model: a SOLOv2Model, one wrapped in Ultralytics' AutoBackend, or an export (its metadata).

    Raises:
        TypeError: When `model` is none of these.
    """
    if (m := solo_model(model)) is not None:
        return DecodeSettings.from_settings(m.settings, m.layout)
    settings = settings_from_metadata(getattr(model, "metadata", None) or {})
    if settings is None:
        raise TypeError(f"{type(model).__name__} is not a SOLO model: it carries no 'solo' settings")
    if settings.strides is None:
        raise TypeError("the export's 'solo' metadata has no level strides: export it again with this ultra-solo")
    return DecodeSettings.from_settings(settings, GridLayout(settings.num_grids, settings.strides, settings.offsets))


def register_safe_globals() -> None:
    """Allow the classes a SOLO checkpoint pickles under `ULTRALYTICS_SAFE_LOAD=1` (`torch.load(weights_only=True)`)."""
    from torchvision.models.resnet import BasicBlock, Bottleneck
    from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork, LastLevelMaxPool
    from torchvision.ops.misc import Conv2dNormActivation

    from .head import InstanceBranch, MaskFeatureBranch

    protos = [h.proto_class for h in HEADS.values() if hasattr(h, "proto_class")]  # every head's mask branch
    torch.serialization.add_safe_globals(
        [SOLOv2Model, *HEADS.values(), *protos, InstanceBranch, MaskFeatureBranch, FeaturePyramidNetwork,
         LastLevelMaxPool, Conv2dNormActivation, BasicBlock, Bottleneck]
    )  # fmt: skip


register_safe_globals()

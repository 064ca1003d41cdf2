"""SOLOv2 trainer: Ultralytics' segmentation trainer with the SOLOv2 model and validator."""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from copy import copy
from pathlib import Path

from ultralytics.models.yolo.segment import SegmentationTrainer
from ultralytics.utils import DEFAULT_CFG, RANK
from ultralytics.utils.torch_utils import unwrap_model

from ultra_solo.utils.labels import naming_non_polygon_rows

from .network import SOLOv2Model
from .settings import SOLO_ARG_DEFAULTS
from .val import SOLOValidator


def is_backbone_file(pretrained) -> bool:
    """Whether `pretrained` names torchvision backbone weights (`.pth`) rather than an Ultralytics checkpoint."""
    return isinstance(pretrained, (str, Path)) and Path(pretrained).suffix == ".pth"


class SOLOTrainer(SegmentationTrainer):
    """Trainer for SOLOv2; datasets, augmentation, optimiser, EMA, checkpoints and logging are Ultralytics' own.

    SOLO trains with `SOLO_ARG_DEFAULTS` (`overlap_mask=False`) unless told otherwise, so pixels an instance
    shares with a smaller one stay in its mask target. `pretrained=True` loads ImageNet backbone weights from the torch
    hub cache when present, `pretrained=path/to/resnet.pth` from that file, `pretrained=False` trains from scratch.

    Examples:
        >>> trainer = SOLOTrainer(overrides=dict(model="solov2-n.yaml", data="coco8-seg.yaml", epochs=3))
        >>> trainer.train()
    """

    def __init__(self, cfg=DEFAULT_CFG, overrides: dict | None = None, _callbacks: dict | None = None):
        """Initialise the trainer, taking SOLO's defaults for the arguments `overrides` does not set."""
        super().__init__(cfg, {**SOLO_ARG_DEFAULTS, **(overrides or {})}, _callbacks)

    def setup_model(self):
        """Build the model; a `.pth` in `pretrained` is backbone weights for `get_model`, not a checkpoint to load."""
        if str(self.model).endswith((".yaml", ".yml")) and is_backbone_file(self.args.pretrained):
            self.model = self.get_model(cfg=self.model, verbose=RANK in {-1, 0})
            return None
        return super().setup_model()

    def get_model(self, cfg=None, weights=None, verbose: bool = True) -> SOLOv2Model:
        """Return a SOLOv2 model for the dataset's classes, with `weights` or else ImageNet backbone weights."""
        model = SOLOv2Model(cfg, nc=self.data["nc"], ch=self.data["channels"], verbose=verbose and RANK == -1)
        model = self.set_model_names_for_load(model)
        if weights:
            model.load(weights)
        elif not self.args.resume:
            model.load_pretrained_backbone(self.args.pretrained)
        return model

    @contextmanager
    def training_mask_ratio(self):
        """Within: the training set's ground-truth masks as fine as the model's mask loss reads them.

        A SOLO model with a finer mask loss (`loss_stride` 2 or 1) needs finer training masks than the mask_ratio 4 its
        validation keeps, and one with `coverage_targets` masks at input resolution (mask_ratio 1) to average down;
        the run's arguments (args.yaml) stay as given.
        """
        given = self.args.mask_ratio
        settings = unwrap_model(self.model).settings
        self.args.mask_ratio = 1 if settings.coverage_targets else min(given, settings.loss_stride)
        try:
            yield
        finally:
            self.args.mask_ratio = given

    def build_dataset(self, img_path: str, mode: str = "train", batch: int | None = None):
        """Build Ultralytics' YOLO dataset; label rows that are not polygons are named in the error."""
        with naming_non_polygon_rows(img_path), self.training_mask_ratio() if mode == "train" else nullcontext():
            return super().build_dataset(img_path, mode, batch)

    def _close_dataloader_mosaic(self):
        """Ultralytics' close_mosaic, which rebuilds the training transforms, with the training set's mask_ratio."""
        with self.training_mask_ratio():
            super()._close_dataloader_mosaic()

    def get_validator(self) -> SOLOValidator:
        """Return the SOLOv2 validator."""
        return SOLOValidator(self.test_loader, save_dir=self.save_dir, args=copy(self.args), _callbacks=self.callbacks)

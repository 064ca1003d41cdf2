"""SOLO: the `YOLO`-style interface to SOLOv2 models.

Examples:
    >>> from ultra_solo import SOLO
    >>> model = SOLO("solov2-n.yaml")
    >>> model.train(data="coco8-seg.yaml", epochs=3, imgsz=320)
    >>> results = model.predict("image.jpg")
"""

from __future__ import annotations

from pathlib import Path

from ultralytics.engine.model import Model
from ultralytics.utils import DEFAULT_CFG_DICT, LOGGER, RANK

from .export import RUNTIME_PACKAGES, exporting, require
from .network import SOLOv2Model
from .predict import SOLOPredictor
from .train import SOLOTrainer
from .val import SOLOValidator


class SOLO(Model):
    """SOLOv2 instance segmentation with Ultralytics' train / val / predict / export interface.

    Args:
        model (str | Path): A model YAML name or path ('solov2-n.yaml' ... 'solov2-l.yaml') or a trained checkpoint.
        verbose (bool): Print model information when building from a YAML.
    """

    def __init__(self, model: str | Path = "yolo11n-solo.yaml", verbose: bool = False) -> None:
        """Build a model from a YAML, or load a checkpoint or an export (`.onnx`, `.torchscript`)."""
        super().__init__(model=model, task="segment", verbose=verbose)

    def _new(self, cfg: str, task: str | None = None, verbose: bool = False) -> None:
        """Build a new model from a SOLO YAML; Ultralytics' own loader only resolves its shipped YAMLs."""
        self.cfg = self.model_name = cfg
        self.task = "segment"
        self.model = SOLOv2Model(cfg, verbose=verbose and RANK == -1)
        self.overrides.update(model=cfg, task=self.task)
        self.model.args = {**DEFAULT_CFG_DICT, **self.overrides}
        self.model.task = self.task

    def _load(self, weights: str, task: str | None = None) -> None:
        """Load a checkpoint or an export, refusing a checkpoint that does not hold a SOLO model."""
        suffix = Path(weights).suffix
        require(RUNTIME_PACKAGES.get(suffix, ()), f"running a '{suffix}' model")
        super()._load(weights, task="segment")
        if suffix == ".pt" and not isinstance(self.model, SOLOv2Model):
            raise TypeError(f"'{weights}' holds a {type(self.model).__name__}, not a SOLO model; load it with YOLO()")

    def export(self, **kwargs) -> str:
        """Export through Ultralytics' `Exporter` to 'torchscript' (default) or 'onnx'; returns the file's path.

        The export holds the dense network (scores, kernels, mask features) and the SOLO constants as metadata, so
        `SOLO("best.onnx")` predicts and validates like the `.pt`. With `nms=True` (end2end) the graph also decodes:
        scores (B, D), classes (B, D) and mask probabilities (B, D, H/4, W/4), D = min(max_det, nms_pre), with `conf`
        (default 0.001), `max_det` and `agnostic_nms` fixed at export; predicting or validating it with any conf >= that
        and max_det <= that gives the `.pt`'s detections. ONNX needs `pip install 'ultra-solo[export]'`.
        """
        with exporting(self, kwargs) as export_kwargs:
            file = super().export(**export_kwargs)
        LOGGER.info(f"SOLO exports run with ultra-solo (not 'yolo'): ultra-solo segment predict model={file}")
        return file

    @property
    def task_map(self) -> dict:
        """Map the segment task to the SOLOv2 model, trainer, validator and predictor."""
        return {
            "segment": {
                "model": SOLOv2Model,
                "trainer": SOLOTrainer,
                "validator": SOLOValidator,
                "predictor": SOLOPredictor,
            }
        }

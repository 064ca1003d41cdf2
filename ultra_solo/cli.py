"""`ultra-solo [TASK] MODE key=value ...`: the `yolo` command line, for SOLO models.

Arguments are parsed and checked with Ultralytics' own helpers, so every `yolo` key works and an unknown one is refused.
"""

from __future__ import annotations

import inspect
import logging
import sys
from contextlib import contextmanager

from ultra_solo import __version__

MODES = ("train", "val", "predict", "track", "export", "compare")
HELP = f"""ultra-solo {__version__}: SOLOv2 instance segmentation on Ultralytics

Usage: ultra-solo [segment] MODE key=value ...
    MODE: one of {", ".join(MODES)}; keys: any Ultralytics argument (https://docs.ultralytics.com/usage/cfg)

Examples:
    ultra-solo segment train model=solov2-n.yaml data=data.yaml epochs=100 imgsz=640
    ultra-solo segment val model=runs/segment/train/weights/best.pt data=data.yaml
    ultra-solo segment predict model=runs/segment/train/weights/best.pt source=images/
    ultra-solo segment track model=runs/segment/train/weights/best.pt source=video.mp4
    ultra-solo export model=runs/segment/train/weights/best.pt format=onnx
    ultra-solo compare data=data.yaml models=yolo11n-seg.yaml,solov2-n.yaml epochs=50 imgsz=640 batch=16
    ultra-solo compare data=data.yaml models=yolo11n-seg.yaml,yolo11n-solo.yaml seeds=0,1,2 epochs=10 imgsz=320

Models: yolo11n-solo.yaml ... yolo11x-solo.yaml, yolo26n-solo.yaml ... (SOLO heads on YOLO trunks),
    solov2-n.yaml ... solov2-l.yaml (ResNet-18/34/50/101 + FPN), or a trained .pt
Other commands: ultra-solo help | ultra-solo version
"""


class UsageError(Exception):
    """A command line the CLI cannot run; reported as one line."""


@contextmanager
def quiet(logger: logging.Logger):
    """Silence a logger's INFO messages (Ultralytics prints the whole `yolo` help before refusing a key)."""
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def compare_keys() -> set[str]:
    """`compare()`'s own keyword arguments (beside the training arguments it passes on), read off its signature."""
    from ultralytics.cfg import DEFAULT_CFG_DICT

    from ultra_solo.compare import compare

    parameters = inspect.signature(compare).parameters.values()
    return {p.name for p in parameters if p.kind is not p.VAR_KEYWORD and p.name not in DEFAULT_CFG_DICT}


def parse(args: list[str]) -> tuple[str, dict]:
    """Parse `[TASK] MODE key=value ...` into the mode and checked Ultralytics overrides."""
    from ultralytics.cfg import DEFAULT_CFG_DICT, TASKS, check_dict_alignment, merge_equals_args, parse_key_value_pair
    from ultralytics.utils import LOGGER

    mode, overrides = None, {}
    for a in merge_equals_args(args):
        if "=" in a:
            try:
                k, v = parse_key_value_pair(a)
            except AssertionError as e:
                raise UsageError(str(e)) from None
            overrides[k] = v
        elif a in MODES:
            mode = a
        elif a in TASKS:
            if a != "segment":
                raise UsageError(f"task '{a}' is not supported: SOLO models do instance segmentation ('segment')")
        else:
            raise UsageError(f"'{a}' is not a valid ultra-solo argument; see 'ultra-solo help'")
    if mode is None:
        raise UsageError(f"no mode given: use one of {', '.join(MODES)} (see 'ultra-solo help')")
    try:
        with quiet(LOGGER):
            check_dict_alignment(
                DEFAULT_CFG_DICT, overrides, allowed_custom_keys=compare_keys() if mode == "compare" else None
            )
    except SyntaxError as e:
        raise UsageError(" ".join(str(e).replace("YOLO", "ultra-solo").split())) from None
    overrides.pop("mode", None)
    overrides.pop("task", None)
    return mode, overrides


def check_data(data: str) -> None:
    """Check a dataset YAML the way training will, reporting a problem (missing key, file or folder) in one line."""
    from ultralytics.data.utils import check_det_dataset

    try:
        check_det_dataset(data)
    except (FileNotFoundError, SyntaxError, KeyError, AssertionError, ValueError) as e:
        raise UsageError(f"data={data}: {' '.join(str(e).split())}") from None
    except ConnectionError:  # a dataset name Ultralytics knows, not on disk: it tried to download it
        raise UsageError(f"data={data}: not found on disk and could not be downloaded (offline?)") from None


def run(mode: str, overrides: dict) -> None:
    """Run one mode of a SOLO model (or `compare`) with the given overrides."""
    from ultra_solo import SOLO

    if mode == "compare":
        from ultra_solo.compare import compare

        if "data" not in overrides or "models" not in overrides:
            raise UsageError("compare needs data=... and models=a.yaml,b.yaml")
        check_data(overrides["data"])
        compare(**overrides)
        return
    model = overrides.pop("model", "yolo11n-solo.yaml" if mode == "train" else None)
    if model is None:
        raise UsageError(f"'{mode}' needs a model, e.g. model=runs/segment/train/weights/best.pt")
    if mode in {"train", "val"} and overrides.get("data"):
        check_data(overrides["data"])
    solo = SOLO(model)
    if mode in {"predict", "track"}:
        overrides.setdefault("save", True)  # as `yolo predict` and `yolo track` do
        for _ in getattr(solo, mode)(stream=True, **overrides):  # stream: results are saved, not kept in memory
            pass
    elif mode == "export":
        solo.export(**{"format": "torchscript", **overrides})
    else:
        getattr(solo, mode)(**overrides)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `ultra-solo` console script; returns the exit status."""
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in {"help", "-h", "--help"}:
        print(HELP)
        return 0
    if args[0] in {"version", "-v", "--version"}:
        print(__version__)
        return 0
    from ultra_solo.compare.args import ArgumentMismatchError, SeedsError
    from ultra_solo.models.solov2.export import MissingExtraError, UnsupportedFormatError
    from ultra_solo.utils.labels import DatasetError

    try:
        run(*parse(args))
    except (
        UsageError,
        FileNotFoundError,
        MissingExtraError,
        UnsupportedFormatError,
        ArgumentMismatchError,
        SeedsError,
        DatasetError,
    ) as e:
        print(f"ultra-solo: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

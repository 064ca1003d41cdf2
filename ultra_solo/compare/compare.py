"""`compare()`: train every model from one argument set, score all with one validator configuration, report.

Each model trains through its own family's Ultralytics front end (`ultralytics.YOLO` or `SOLO`) into
`runs/compare/NAME/<model>/`. Before any training the runs' `args.yaml` files are checked to differ only in the
model and output names, also against runs already in that folder: a model whose run there finished is not retrained,
an interrupted one resumes.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from ultralytics import YOLO
from ultralytics.cfg import DEFAULT_CFG_DICT, check_dict_alignment
from ultralytics.data.utils import check_det_dataset
from ultralytics.nn.backends.base import BaseBackend
from ultralytics.nn.tasks import torch_safe_load
from ultralytics.utils import LOGGER, RUNS_DIR, YAML
from ultralytics.utils.patches import torch_load
from ultralytics.utils.torch_utils import unwrap_model

from ultra_solo.models.solov2.cfg import find_model_yaml
from ultra_solo.models.solov2.model import SOLO
from ultra_solo.models.solov2.settings import SOLO_ARG_DEFAULTS

from .args import SeedsError, absolute_file, check_same_args
from .bootstrap import paired_bootstrap
from .cocoeval import COCOScores, class_names, coco_scores_from_file, ground_truth, val_dataset, with_coco_predictions
from .pictures import write_predictions
from .report import plot_curves, write_report, write_summary
from .speed import TrainSpeed, inference_latency

SHARED_DEFAULTS = {k: DEFAULT_CFG_DICT[k] for k in SOLO_ARG_DEFAULTS}  # YOLO and SOLO default these differently
VAL_KEYS = ("imgsz", "batch", "device", "conf", "iou", "max_det", "overlap_mask", "half", "workers", "single_cls")


def model_class(spec: str) -> type:
    """`SOLO` for SOLO YAMLs, checkpoints and exports, `ultralytics.YOLO` for everything else.

    A checkpoint is SOLO's if its model's YAML has a `solo` block, an export if its metadata has one; a file that cannot
    be read is refused by Ultralytics' own loader, naming it.
    """
    suffix = Path(spec).suffix
    if suffix in {".yaml", ".yml"}:
        try:
            return SOLO if "solo" in YAML.load(find_model_yaml(spec)[0]) else YOLO
        except FileNotFoundError:  # not a file of ours, nor a path: one of Ultralytics' own names
            return YOLO
    if suffix == ".pt":
        ckpt, _ = torch_safe_load(spec)
        model = ckpt.get("ema") or ckpt.get("model")
        return SOLO if "solo" in (getattr(model, "yaml", None) or {}) else YOLO
    return SOLO if "solo" in BaseBackend.read_metadata(spec) else YOLO


class Run:
    """One model's training run inside the comparison folder: `<model>/`, or `<model>-seed<k>/` with `seeds`."""

    def __init__(self, spec: str, folder: Path, seed: int | None = None):
        """Locate the run of model `spec` (trained with `seed`, when the comparison has seeds) in `folder`."""
        self.spec, self.seed, self.folder = spec, seed, folder
        self.name = Path(spec).stem if seed is None else f"{Path(spec).stem}-seed{seed}"
        self.cls = model_class(spec)
        self.dir = folder / self.name
        self.last, self.best = self.dir / "weights" / "last.pt", self.dir / "weights" / "best.pt"

    def finished(self) -> bool:
        """Whether the run completed (Ultralytics strips the optimizer and sets epoch -1 at the end)."""
        return self.best.is_file() and self.last.is_file() and torch_load(self.last).get("epoch") == -1

    def train_kwargs(self, train_args: dict) -> dict:
        """The `train()` arguments of this run."""
        seed = {} if self.seed is None else {"seed": self.seed}
        return {**train_args, **seed, "project": str(self.folder), "name": self.name, "exist_ok": True}

    def effective_args(self, train_args: dict, scratch: Path) -> Path:
        """Have the model's own trainer write the `args.yaml` this run gets, into `scratch`; return that file."""
        model = self.cls(self.spec)
        overrides = {**self.train_kwargs(train_args), "model": model.overrides["model"], "task": model.task}
        model._smart_load("trainer")(overrides={**overrides, "mode": "train", "save_dir": str(scratch / self.name)})
        return scratch / self.name / "args.yaml"

    def train(self, train_args: dict) -> None:
        """Train, resume or skip; record training speed in `speed.json` and the starting weights in `weights.txt`."""
        if self.finished():
            LOGGER.info(f"compare: {self.spec} already trained in {self.dir}, not retraining")
            return
        resume = self.last.is_file()
        model = self.cls(self.last if resume else self.spec)
        TrainSpeed(self.dir / "speed.json").attach(model)
        if not resume:
            model.add_callback("on_pretrain_routine_end", self.record_start)
        model.train(resume=True) if resume else model.train(**self.train_kwargs(train_args))

    def record_start(self, trainer) -> None:
        """Callback once the trainer built and loaded its model: write what the run starts from to `weights.txt`."""
        (self.dir / "weights.txt").write_text(started_from(trainer))

    def weights(self) -> str:
        """What the run started from (see `started_from`), as its trainer recorded it."""
        file = self.dir / "weights.txt"
        return file.read_text() if file.is_file() else "unknown (run trained before ultra-solo recorded it)"


def started_from(trainer) -> str:
    """What a trainer's model starts from, as loaded: scratch, ImageNet backbone weights or a checkpoint.

    SOLO models record what their loaders actually transferred (`SOLOv2Model.weights_source`: a missing ImageNet file
    means scratch); for YOLO models Ultralytics loads a `.pt` model or a `pretrained=` checkpoint, and nothing else.
    """
    args = trainer.args
    model = str(args.model) if str(args.model).endswith(".pt") else None
    checkpoint = model or (str(args.pretrained) if isinstance(args.pretrained, (str, Path)) else None)
    source = getattr(unwrap_model(trainer.model), "weights_source", None)
    if source is not None:
        named = not checkpoint or source == "scratch" or Path(checkpoint).name in source
        return source if named else f"{source} ({checkpoint})"
    return f"checkpoint {checkpoint}" if checkpoint else "scratch"


def evaluate(run: Run, model, val_args: dict, gt: dict | None) -> tuple[dict, COCOScores | None]:
    """Score a run's best.pt (`model`) with the shared validator settings; add size and training time. Returns the
    summary row and, with a ground truth `gt`, the COCO evaluation it was read from (per image, for the bootstrap)."""
    validator = model._smart_load("validator")
    metrics = model.val(validator=with_coco_predictions(validator) if gt else validator, name=run.name, **val_args)
    seed = {} if run.seed is None else {"seed": run.seed}
    row = {"model": run.spec, **seed, "weights": run.weights(), **metrics.results_dict}
    scores = coco_scores_from_file(gt, metrics.save_dir / "predictions.json") if gt else None
    if scores is not None:
        row |= scores.metrics()
    _, params, _, flops = model.info(imgsz=val_args["imgsz"])
    results = (run.dir / "results.csv").read_text().splitlines()
    hours = float(results[-1].split(",")[results[0].split(",").index("time")]) / 3600
    train_img_s = TrainSpeed.images_per_second(run.dir / "speed.json")
    return {**row, "params_M": params / 1e6, "GFLOPs": flops, "train_img_s": train_img_s, "train_hours": hours}, scores


def image_intervals(runs: list[Run], scores: dict, resamples: int) -> dict[str, dict]:
    """{run name: {metric: Interval}}: every run's COCO metric differences from the first model's run of the same seed,
    with paired-bootstrap intervals over the validation images."""
    intervals = {}
    for seed in dict.fromkeys(run.seed for run in runs):
        group = [run.name for run in runs if run.seed == seed]
        intervals |= paired_bootstrap({name: scores[name] for name in group}, group[0], resamples)
    return intervals


def check_arguments(runs: list[Run], train_args: dict) -> dict:
    """Check, before any training, that every run gets the same arguments but its seed (with `seeds`), also runs
    already in the folder."""
    scratch = runs[0].folder / ".args"
    seeded = runs[0].seed is not None
    try:
        requested = {run.name: run.effective_args(train_args, scratch) for run in runs}
        shared = check_same_args(requested, per_run={"seed"} if seeded else set())
        for run in runs:
            if (run.dir / "args.yaml").is_file():  # an earlier run of this comparison: same arguments or stop
                check_same_args({f"{run.name} now": requested[run.name], f"{run.name} before": run.dir / "args.yaml"})
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return shared


def parse_seeds(seeds: str | int | list[int] | None, train_args: dict) -> list[int | None]:
    """The comparison's seeds: [None] (one run per model, with `seed` as given) or the distinct integers of `seeds`.

    Raises:
        SeedsError: For `seeds` together with `seed`, or seeds that are not distinct integers.
    """
    if seeds is None:
        return [None]
    if "seed" in train_args:
        raise SeedsError(f"give seeds={seeds} or seed={train_args['seed']}, not both: with seeds each run gets its own")
    items = seeds.split(",") if isinstance(seeds, str) else [seeds] if isinstance(seeds, int) else list(seeds)
    try:
        parsed = [int(str(s).strip()) for s in items]
    except ValueError:
        raise SeedsError(f"seeds={seeds!r}: expected integers such as seeds=0,1,2") from None
    if not parsed or len(set(parsed)) != len(parsed):
        raise SeedsError(f"seeds={seeds!r}: expected distinct integers such as seeds=0,1,2")
    return parsed


def compare(
    data: str,
    models: str | list[str],
    name: str = "exp",
    project: str | Path | None = None,
    cocoeval: bool = True,
    latency_images: int = 16,
    picture_images: int = 4,
    seeds: str | int | list[int] | None = None,
    bootstrap: int = 1000,
    **train_args,
) -> Path:
    """Train and compare models under identical settings; returns the folder with report.md and summary.csv.

    Args:
        data (str): Dataset YAML (YOLO-seg format).
        models (str | list[str]): Model YAMLs or checkpoints, as a list or comma-separated, e.g.
            'yolo11n-seg.yaml,solov2-n.yaml'.
        name (str): Comparison name: outputs go to `project/name`.
        project (str | Path, optional): Parent folder, default `runs/compare`.
        cocoeval (bool): Also score the validator's predictions with faster-coco-eval: COCO mask AP, AP by object size
            and Boundary AP (ground truth built from the YOLO labels).
        latency_images (int): Validation images used for the latency measurement.
        picture_images (int): Validation images shown in predictions.jpg (0: no picture).
        seeds (str | int | list[int], optional): Train every model once per seed ('0,1,2'), each in its own run
            folder `<model>-seed<k>`; the report adds mean ± std over seeds and, for every model against the first,
            the per-seed paired difference with a 95 % t interval. Not together with `seed`.
        bootstrap (int): Image resamples of the paired bootstrap that gives every COCO metric difference from the first
            model (same seed) a 95 % interval over the validation images, even for one run per model (0: none).
        **train_args: Ultralytics training arguments shared by every model (epochs, imgsz, batch, seed, ...).

    Returns:
        (Path): The comparison folder.
    """
    specs = [m.strip() for m in models.split(",")] if isinstance(models, str) else list(models)
    folder = Path(project or RUNS_DIR / "compare").resolve() / name
    check_dict_alignment(DEFAULT_CFG_DICT, train_args)
    seed_list = parse_seeds(seeds, train_args)
    train_args = {**SHARED_DEFAULTS, **train_args, "data": data}
    train_args |= {k: absolute_file(train_args[k]) for k in ("data", "pretrained") if k in train_args}  # any cwd
    runs = [Run(spec, folder, seed) for spec in specs for seed in seed_list]
    if len({r.name for r in runs}) != len(runs):
        raise ValueError(f"models {specs} must have distinct file names: each gets the folder {folder}/<name>")
    shared = check_arguments(runs, train_args)
    for run in runs:
        run.train(train_args)

    val_args = {k: train_args[k] for k in VAL_KEYS if k in train_args}
    val_args |= {"data": data, "plots": False, "project": str(folder / "val"), "exist_ok": True}
    data_dict = check_det_dataset(data)
    single_cls = bool(val_args.get("single_cls"))
    names = class_names(data_dict, single_cls)  # what the validator scores with
    val_set = val_dataset(data_dict, single_cls)
    gt = ground_truth(val_set, names) if cocoeval else None
    images = sorted(Path(f) for f in val_set.im_files)[:latency_images]
    loaded = {run.name: run.cls(run.best) for run in runs}
    rows, scores = zip(*(evaluate(run, loaded[run.name], val_args, gt) for run in runs))
    intervals = image_intervals(runs, dict(zip([r.name for r in runs], scores)), bootstrap) if gt else {}
    first = {}  # model spec -> its first seed's run: latency and the picture, which the seed does not change
    for run in runs:
        first.setdefault(run.spec, run)
    models = {Path(spec).stem: loaded[run.name] for spec, run in first.items()}
    predict = {"imgsz": val_args["imgsz"], "device": val_args.get("device")}
    latency = inference_latency(models, images, **predict)
    rows = [{**row, "latency_ms": latency[Path(run.spec).stem]["total"]} for row, run in zip(rows, runs)]

    write_summary(folder / "summary.csv", rows)
    plot_curves(folder / "curves.png", {run.name: run.dir / "results.csv" for run in runs})
    if picture_images:
        shown = sorted(val_set.labels, key=lambda label: label["im_file"])[:picture_images]
        write_predictions(folder / "predictions.jpg", models, shown, names, **predict)
    notes = {
        "keys compare sets": f"{SHARED_DEFAULTS} unless given (SOLO's trainer would default overlap_mask to False)",
        "keys a family must set differently to work": "none",
        "latency": f"median ms per image (preprocess + inference + postprocess), batch 1, imgsz {val_args['imgsz']},"
        f" {len(images)} val images x 3 passes after a warm-up, the models taking turns on every image, predict"
        " defaults (conf 0.25)",
        "train img/s": "training-loop images per second (no validation, no checkpointing), from this run's epochs",
        "training h": "wall time of the run from results.csv, including per-epoch validation",
        "weights": "what each model started from, as its trainer loaded it",
    }
    if seed_list != [None]:
        notes["seeds"] = (
            f"every model trained once per seed {seed_list} (the only argument that differs between its runs);"
            " latency and the picture from each model's first seed"
        )
    if gt:
        notes["COCO columns"] = (
            "faster-coco-eval on the validator's own predictions (native-resolution masks, conf down to the validator's"
            " conf): COCO mask AP (AP75: at mask IoU 0.75), mask AP of small / medium / large objects (< 32^2,"
            " 32^2-96^2, > 96^2 px in the original image; '-': no such objects), Boundary AP (Boundary IoU, dilation"
            " 2% of the image diagonal)"
        )
    if intervals:
        notes["bootstrap"] = f"{bootstrap} paired resamples of the {len(gt['images'])} validation images (see below)"
    pairs = [(row, rows[seed_list.index(run.seed)], intervals[run.name]) for row, run in zip(rows, runs)
             if run.name in intervals]  # fmt: skip
    write_report(folder / "report.md", rows, shared, val_args, notes, pairs)
    LOGGER.info(f"compare: report written to {folder / 'report.md'}")
    return folder

"""``python -m inception_keras.train``: train GoogLeNet and leave a complete, resumable run directory.

Configuration flows command-line options -> :class:`TrainConfig` (a recipe's
defaults, then explicit options) -> data / model / optimizer builders; the
resolved config is saved as ``config.json`` in the run directory.

A run directory ``OUTPUT_DIR/NAME/`` holds: ``config.json``, ``model.keras``
(the epoch with the best validation accuracy of the main head, all heads,
compiled), ``inference.keras`` (its single-output model), ``history.csv``,
``logs/`` (TensorBoard), ``curves.png``, ``report.md|csv|json`` (per-class
precision / recall / F1 for train, val and test) and ``summary.json`` (written
last: its presence marks the run as finished).

Running the same command again resumes an interrupted run from its last
completed epoch (``checkpoint/``); a finished run is never overwritten unless
``--overwrite`` is given.

``--strategy`` trains on several GPUs, machines or a TPU with ``tf.distribute``
(see ``distribute.py``): the model, optimizer and metrics are created in the
strategy's scope, ``--batch-size`` is the global batch, and only the chief
writes the run directory.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import time
import zipfile
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import keras
import numpy as np
import tensorflow as tf

from . import evaluate
from .distribute import (LR_SCALINGS, STRATEGIES, for_strategy, is_chief, make_strategy, scaled_learning_rate,
                         shard_by_data, task_name)
from .callbacks import EpochRecorder, StopOnNonFiniteLoss, restore_rng_states, save_model_atomically
from .data import DataBundle, DataConfig, load_data
from .errors import ArgumentParser, UserError, run_cli
from .googlenet import build_googlenet, dtype_policy
from .heads import compile_googlenet, inference_model
from .optim import OPTIMIZERS, SCHEDULES, OptimConfig, make_optimizer
from .runs import (CONFIG_FILE, SUMMARY_FILE, RunDir, check_run_name, check_writable, prepare, read_json,
                   write_json)
from .sources import KNOWN_DATASETS
from .speedups import accelerate
from .variants import VARIANTS

PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")
MAX_SEED = 2**32 - 1  # NumPy's and scikit-learn's seeds are unsigned 32-bit integers


@dataclass
class ModelConfig:
    """Which GoogLeNet to build and how its heads are weighted."""

    variant: str = "bn"
    aux_heads: bool = True
    aux_weight: float = 0.3
    dropout: float | None = None
    label_smoothing: float = 0.1


@dataclass
class TrainConfig:
    """Everything a run depends on; saved as ``config.json``."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    epochs: int = 12
    output_dir: str = "runs"
    name: str | None = None
    max_train_batches: int | None = None
    max_val_batches: int | None = None
    precision: str = "float32"
    strategy: str = "auto"
    tpu: str | None = None
    deterministic: bool = False
    overwrite: bool = False
    verbose: str = "auto"

    @property
    def run_name(self) -> str:
        """``--name`` or a name made of the settings that matter, so the same command finds the same run."""
        dataset = Path(self.data.dataset).name if "/" in self.data.dataset else self.data.dataset
        return self.name or f"{dataset}_{self.model.variant}_{self.data.image_size}px"


# Settings that must match for a rerun to resume an interrupted run.
RESUME_KEYS = {"data", "model", "optim", "epochs", "max_train_batches", "max_val_batches", "precision"}

# Recipes: defaults that --recipe swaps in before explicit options are applied.
RECIPES: dict[str, dict[str, Any]] = {
    # Fast small-data recipe: the default, about 3 minutes on 2 CPU cores for the bundled sample.
    "quick": {},
    # The paper's recipe: SGD 0.9, x0.96 every 8 epochs, Polyak averaging, 224 px.
    "paper": {"variant": "paper", "image_size": 224, "optimizer": "sgd", "learning_rate": 0.01,
              "schedule": "paper", "weight_decay": 2e-4, "ema": True, "label_smoothing": 0.0,
              "augment": "inception", "batch_size": 32, "epochs": 250},
    # Full Fashion-MNIST aimed at 94%: BN variant at 32 px (28 px images, upsampled a little), AdamW + cosine,
    # flip + pad-and-crop, label smoothing; about 2 minutes an epoch on 2 CPU cores.
    "fashion_mnist": {"dataset": "fashion_mnist", "image_size": 32, "variant": "bn", "optimizer": "adamw",
                      "learning_rate": 2e-3, "schedule": "cosine", "weight_decay": 0.05,
                      "label_smoothing": 0.1, "augment": "flip_crop", "batch_size": 64, "epochs": 20},
}


@dataclass(frozen=True)
class Option:
    """One command-line option and the config field it sets (section None = TrainConfig itself)."""

    flag: str
    section: str | None
    field: str
    help: str
    type: Any = None
    choices: Sequence[str] | None = None
    boolean: bool = False


OPTIONS: tuple[Option, ...] = (
    Option("--dataset", "data", "dataset", "dataset: 'sample' (bundled Fashion-MNIST subset), 'fashion_mnist', "
           "a TFDS name, or a path to an image folder / IDX directory", str),
    Option("--data-dir", "data", "data_dir", "where the dataset's files are (TFDS data_dir, IDX or image folder)", str),
    Option("--image-size", "data", "image_size", "square input side in pixels (>= 32)", int),
    Option("--channels", "data", "channels", "1 or 3 input channels (default: the dataset's own)", int),
    Option("--val-split", "data", "val_split", "fraction of train held out for validation when the "
           "dataset has no validation split", float),
    Option("--augment", "data", "augment", "training augmentation (validation/test are never augmented)", str,
           ("auto", "none", "flip_crop", "inception")),
    Option("--batch-size", "data", "batch_size", "global batch size (split across the replicas)", int),
    Option("--seed", "data", "seed", "seed of weights, split, shuffling and augmentation", int),
    Option("--variant", "model", "variant", "architecture variant", str, tuple(VARIANTS)),
    Option("--aux-heads", "model", "aux_heads", "train with the two auxiliary classifiers", boolean=True),
    Option("--aux-weight", "model", "aux_weight", "loss weight of each aux head", float),
    Option("--dropout", "model", "dropout", "main head dropout (default: the variant's)", float),
    Option("--label-smoothing", "model", "label_smoothing", "label smoothing of every head's loss", float),
    Option("--optimizer", "optim", "optimizer", "optimizer (sgd uses momentum 0.9)", str, OPTIMIZERS),
    Option("--lr", "optim", "learning_rate", "peak learning rate", float),
    Option("--lr-scaling", "optim", "lr_scaling", "none = use --lr as given; linear = --lr x global batch / 256",
           str, LR_SCALINGS),
    Option("--schedule", "optim", "schedule", "learning-rate schedule: paper = x0.96 every 8 epochs, "
           "cosine = warm-up then cosine decay", str, SCHEDULES),
    Option("--warmup-epochs", "optim", "warmup_epochs", "warm-up length of the cosine schedule", float),
    Option("--weight-decay", "optim", "weight_decay", "decoupled weight decay (not on biases / BatchNorm)", float),
    Option("--ema", "optim", "ema", "keep an exponential moving average of the weights (the paper's Polyak "
           "averaging); validation and the saved model use it", boolean=True),
    Option("--ema-momentum", "optim", "ema_momentum", "EMA momentum", float),
    Option("--epochs", None, "epochs", "number of epochs", int),
    Option("--output-dir", None, "output_dir", "parent of the run directory", str),
    Option("--name", None, "name", "run directory name (default: DATASET_VARIANT_SIZEpx)", str),
    Option("--max-train-batches", None, "max_train_batches", "cap on training batches per epoch (quick runs)", int),
    Option("--max-val-batches", None, "max_val_batches", "cap on validation batches per epoch", int),
    Option("--precision", None, "precision", "float32, or mixed precision (mixed_bfloat16 on CPUs that "
           "support it, mixed_float16 on GPUs); softmax outputs stay float32", str, PRECISIONS),
    Option("--strategy", None, "strategy", "tf.distribute strategy: auto = mirrored over several GPUs, else "
           "default; multiworker reads TF_CONFIG; tpu needs --tpu", str, STRATEGIES),
    Option("--tpu", None, "tpu", "TPU name or grpc:// address for --strategy tpu ('local' on a TPU VM)", str),
    Option("--deterministic", None, "deterministic", "bitwise-reproducible runs: TensorFlow op "
           "determinism, Grappler's arithmetic optimiser off", boolean=True),
    Option("--overwrite", None, "overwrite", "replace an existing run directory", boolean=True),
    Option("--verbose", None, "verbose", "progress: auto = progress bar on a terminal, one line per epoch "
           "otherwise", str, ("auto", "bar", "epoch", "none")),
)


def build_parser() -> argparse.ArgumentParser:
    """The ``train`` command's parser; every option's help shows the ``quick`` recipe's default."""
    defaults = TrainConfig()
    parser = ArgumentParser(
        prog="python -m inception_keras.train",
        description="Train GoogLeNet and write a run directory (model, curves, per-class reports).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        epilog="Known datasets: " + ", ".join(KNOWN_DATASETS) + ". Any TFDS name works when its data is in "
               "--data-dir.",
    )
    parser.add_argument("--recipe", choices=tuple(RECIPES), default=None,  # None = quick, and not given
                        help="preset defaults: quick (bundled sample, ~3 min on CPU), paper (the paper's SGD "
                             "recipe at 224 px), fashion_mnist (full Fashion-MNIST, 32 px, 20 epochs) "
                             "(default: quick)")
    parser.add_argument("--resume", metavar="RUN_DIR",
                        help="resume the interrupted run in RUN_DIR with its saved settings")
    for option in OPTIONS:
        section = getattr(defaults, option.section) if option.section else defaults
        default = "" if "(default:" in option.help else f" (default: {getattr(section, option.field)})"
        kwargs: dict[str, Any] = {"dest": option.field, "default": None, "help": option.help + default}
        if option.boolean:
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs.update(type=option.type, choices=option.choices)
        parser.add_argument(option.flag, **kwargs)
    parser.formatter_class = argparse.HelpFormatter  # defaults are in the help texts already
    return parser


def config_from_args(argv: Sequence[str] | None = None) -> TrainConfig:
    """Parse options into a :class:`TrainConfig`: dataclass defaults, then the recipe, then explicit options."""
    args = build_parser().parse_args(argv)
    if args.resume:
        return resumed_config(args)
    config = TrainConfig()
    explicit = {o.field: getattr(args, o.field) for o in OPTIONS if getattr(args, o.field) is not None}
    recipe = RECIPES[args.recipe or "quick"]
    for option in OPTIONS:
        value = explicit.get(option.field, recipe.get(option.field))
        if value is not None:
            target = getattr(config, option.section) if option.section else config
            setattr(target, option.field, value)
    return config


def resumed_config(args: argparse.Namespace) -> TrainConfig:
    """The config saved in ``--resume RUN_DIR`` of an unfinished run (no other option, not even --recipe)."""
    given = [o.flag for o in OPTIONS if getattr(args, o.field) is not None]
    given += ["--recipe"] if args.recipe is not None else []
    if given:
        restart = ("; to start the run again instead, rerun the command that started it with --overwrite"
                   if "--overwrite" in given else "")
        raise UserError(f"--resume continues a run with its saved settings; drop {', '.join(given)}{restart}")
    run = Path(os.path.abspath(Path(args.resume).expanduser()))  # "." or "runs/x/.." name the folder itself
    if not (run / CONFIG_FILE).exists():
        raise UserError(f"{run} is not a run directory (no {CONFIG_FILE}); check the path")
    if RunDir(run).is_finished():
        raise UserError(f"{run} holds a finished run, there is nothing to resume; to train it again, rerun the "
                        f"command that started it (its settings are in {run / CONFIG_FILE}) with --overwrite, "
                        "or with --name to keep this run")
    saved = read_json(run / CONFIG_FILE)
    try:
        config = TrainConfig(data=DataConfig(**saved["data"]), model=ModelConfig(**saved["model"]),
                             optim=OptimConfig(**saved["optim"]),
                             **{k: saved[k] for k in ("epochs", "max_train_batches", "max_val_batches",
                                                      "precision", "deterministic", "verbose")},
                             strategy=saved.get("strategy", "auto"), tpu=saved.get("tpu"))
    except (KeyError, TypeError) as exc:
        raise UserError(f"{run / CONFIG_FILE} is not a config this version understands ({exc}); "
                        "start a new run") from None
    config.output_dir, config.name = str(run.parent), run.name
    return config


def validate(config: TrainConfig) -> None:
    """Reject impossible settings before anything is loaded or written."""
    checks = [
        (config.epochs >= 1, f"--epochs must be at least 1, got {config.epochs}"),
        (config.data.batch_size >= 1, f"--batch-size must be at least 1, got {config.data.batch_size}"),
        (0 < config.optim.learning_rate < math.inf,
         f"--lr must be positive and finite, got {config.optim.learning_rate}"),
        (0 <= config.optim.weight_decay < math.inf,
         f"--weight-decay must be >= 0 and finite, got {config.optim.weight_decay}"),
        (0 <= config.model.aux_weight < math.inf,
         f"--aux-weight must be >= 0 and finite, got {config.model.aux_weight}"),
        (0 <= config.optim.warmup_epochs < math.inf,
         f"--warmup-epochs must be >= 0 and finite, got {config.optim.warmup_epochs}"),
        (0 <= config.data.seed <= MAX_SEED, f"--seed must be an integer from 0 to {MAX_SEED}, got {config.data.seed}"),
        (0 <= config.model.label_smoothing < 1,
         f"--label-smoothing must be in [0, 1), got {config.model.label_smoothing}"),
        (config.model.dropout is None or 0 <= config.model.dropout < 1,
         f"--dropout must be in [0, 1), got {config.model.dropout}"),
        (0 < config.optim.ema_momentum < 1, f"--ema-momentum must be in (0, 1), got {config.optim.ema_momentum}"),
        (config.max_train_batches is None or config.max_train_batches >= 1, "--max-train-batches must be >= 1"),
        (config.max_val_batches is None or config.max_val_batches >= 1, "--max-val-batches must be >= 1"),
        (config.model.variant in VARIANTS, f"unknown variant {config.model.variant!r}; choose one of "
                                           f"{', '.join(VARIANTS)}"),
        (config.optim.optimizer in OPTIMIZERS, f"unknown optimizer {config.optim.optimizer!r}; choose one of "
                                               f"{', '.join(OPTIMIZERS)}"),
        (config.optim.schedule in SCHEDULES, f"unknown schedule {config.optim.schedule!r}; choose one of "
                                             f"{', '.join(SCHEDULES)}"),
        (config.precision in PRECISIONS, f"unknown precision {config.precision!r}; choose one of "
                                         f"{', '.join(PRECISIONS)}"),
        (config.optim.lr_scaling in LR_SCALINGS, f"unknown --lr-scaling {config.optim.lr_scaling!r}; choose one "
                                                 f"of {', '.join(LR_SCALINGS)}"),
    ]
    for ok, message in checks:
        if not ok:
            raise UserError(message)
    if config.name is not None:
        check_run_name(config.name)


def versions() -> dict[str, str]:
    """Library versions recorded with every run."""
    return {"python": platform.python_version(), "tensorflow": tf.__version__, "keras": keras.__version__,
            "numpy": np.__version__}


def heads_of(config: TrainConfig) -> tuple[str, ...] | None:
    """Output names the data pipeline must label; None (plain labels) for the single-output model.

    Keras 3 matches a dict of labels to outputs only for multi-output models.
    """
    return ("main", "aux1", "aux2") if config.model.aux_heads else None


def monitor_of(config: TrainConfig) -> str:
    """The metric that picks the best epoch: validation accuracy of the main head."""
    return "val_main_accuracy" if config.model.aux_heads else "val_accuracy"


def steps_per_epoch(config: TrainConfig, bundle: DataBundle) -> int:
    """Training batches per epoch, after ``--max-train-batches``."""
    steps = bundle.steps_per_epoch()
    return min(steps, config.max_train_batches or steps)


def learning_rate_of(config: TrainConfig) -> float:
    """The peak learning rate used: ``--lr``, scaled to the global batch by ``--lr-scaling``."""
    return scaled_learning_rate(config.optim.learning_rate, config.optim.lr_scaling, config.data.batch_size)


def new_model(config: TrainConfig, bundle: DataBundle, strategy: tf.distribute.Strategy) -> keras.Model:
    """Build and compile the model the config describes, with its variables in ``strategy``'s scope."""
    size = config.data.image_size
    optim = replace(config.optim, learning_rate=learning_rate_of(config))
    with strategy.scope():
        with dtype_policy(config.precision):
            model = build_googlenet(bundle.num_classes, input_shape=(size, size, bundle.channels),
                                    variant=config.model.variant, aux_heads=config.model.aux_heads,
                                    dropout=config.model.dropout)
        model = for_strategy(model, strategy)
        optimizer = make_optimizer(optim, steps_per_epoch(config, bundle), config.epochs)
        model = compile_googlenet(model, optimizer, aux_weight=config.model.aux_weight,
                                  label_smoothing=config.model.label_smoothing)
        return accelerate(model)  # TensorFlow's fast paths; the saved files keep stock layers


def resume_model(config: TrainConfig, bundle: DataBundle, run_dir: RunDir, state,
                 strategy: tf.distribute.Strategy) -> keras.Model:
    """Rebuild the model and optimizer from the config, then load the checkpoint's weights and state.

    Rebuilding (rather than ``keras.models.load_model``) keeps what a saved
    optimizer config loses (the weight-decay exclusions); ``load_weights`` of a
    ``.keras`` file restores the optimizer's variables too, and the dropout
    generators are restored from the run state.
    """
    model = new_model(config, bundle, strategy)  # compiled with its optimizer variables, ready to be loaded
    load_checkpoint(model, run_dir.checkpoint_path(state), state.rng_states)
    return model


def load_checkpoint(model: keras.Model, path: Path, rng_states: dict[str, list[int]]) -> None:
    """Load a resume checkpoint's weights, optimizer state and dropout RNG states into ``model``.

    A truncated, corrupt, missing or mismatched checkpoint is a :class:`UserError`
    (like a corrupt ``state.json``): the run can only be started again.
    """
    try:
        model.load_weights(path)
        restore_rng_states(model, rng_states)
    except (zipfile.BadZipFile, OSError, EOFError, KeyError, ValueError) as exc:
        reason = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise UserError(f"the checkpoint {path} is unreadable ({reason}); to start the run again, rerun the "
                        "command that started it with --overwrite (or delete the run)") from None


def progress_mode(verbose: str) -> int:
    """Keras ``verbose``: a progress bar on a terminal, one line per epoch otherwise."""
    if verbose == "auto":
        return 1 if sys.stdout.isatty() else 2
    return {"bar": 1, "epoch": 2, "none": 0}[verbose]


def fit(model: keras.Model, config: TrainConfig, bundle: DataBundle, run_dir: RunDir, state,
        chief: bool = True) -> None:
    """Train from ``state.epochs_done`` to ``config.epochs``; the ``chief`` commits every epoch."""
    heads = heads_of(config)
    # The remaining epochs back to back, each a function of (seed, epoch): resuming repeats nothing.
    train_ds = bundle.train_dataset(heads, epochs=range(state.epochs_done, config.epochs),
                                    max_batches=config.max_train_batches)
    val_ds = bundle.eval_dataset("val", heads=heads)
    if config.max_val_batches:
        val_ds = val_ds.take(config.max_val_batches)
    train_ds, val_ds = shard_by_data(train_ds), shard_by_data(val_ds)
    guard = StopOnNonFiniteLoss()
    callbacks: list[keras.callbacks.Callback] = [guard]
    if config.optim.ema:
        swap = keras.callbacks.SwapEMAWeights(swap_on_epoch=True)
        # A resumed checkpoint was saved with the averaged weights swapped in (see EpochRecorder).
        swap._ema_weights_in_model = state.ema_weights_in_model
        callbacks.append(swap)
    if chief:  # the other workers train in lockstep but write nothing
        callbacks += [
            EpochRecorder(run_dir, state, monitor_of(config), ema=config.optim.ema,
                          save_best=lambda m: save_model_atomically(m, run_dir.file("model.keras"))),
            keras.callbacks.TensorBoard(log_dir=str(run_dir.file("logs")), write_graph=False),
        ]
    model.fit(train_ds, validation_data=val_ds, epochs=config.epochs, initial_epoch=state.epochs_done,
              steps_per_epoch=steps_per_epoch(config, bundle), callbacks=callbacks, verbose=progress_mode(config.verbose), shuffle=False)
    if guard.where is not None:
        raise UserError(divergence_message(guard, state.epochs_done, run_dir))


def divergence_message(guard: StopOnNonFiniteLoss, good_epochs: int, run_dir: RunDir) -> str:
    """The one-line error of a diverged run: where, which epoch is kept (the last with finite values), what to do."""
    if good_epochs:
        return (f"{guard.describe()}; the last good checkpoint (epoch {good_epochs}) is kept in {run_dir.path}; "
                "lower --lr or check the data, then rerun with --overwrite")
    return (f"{guard.describe()}; no epoch ended with finite losses and weights, so nothing was saved as a "
            "model; lower --lr or check the data, then rerun")


def finish(config: TrainConfig, bundle: DataBundle, run_dir: RunDir, state, started: float) -> dict[str, Any]:
    """Evaluate the best model on every split and write the reports, curves, inference model and summary."""
    best = keras.models.load_model(run_dir.file("model.keras"))
    save_model_atomically(inference_model(best), run_dir.file("inference.keras"))
    reports = evaluate.evaluate_run_splits(best, bundle, splits=("train", "val", "test"), crops=1)
    evaluate.write_reports(reports, run_dir.path)
    evaluate.plot_reports(reports, bundle, run_dir.path, history_csv=run_dir.file("history.csv"))
    summary = {
        "run_dir": str(run_dir.path),
        "best_epoch": state.best_epoch,
        "best_val_accuracy": state.best_metric,
        "epochs": state.epochs_done,
        "wall_time_s": round(time.time() - started, 1),
        "splits": {split: report.overall for split, report in reports.items()},
    }
    write_json(run_dir.file(SUMMARY_FILE), summary)
    run_dir.clear_checkpoints()
    return summary


def make_deterministic() -> None:
    """Make this process's training bitwise reproducible (``--deterministic``); process-wide.

    TensorFlow's op determinism fixes the kernels' reduction orders.  Grappler's
    arithmetic optimiser is turned off too: with it on, the epoch's total loss
    (``main + 0.3 aux1 + 0.3 aux2``) of the same tiny run differed in its last
    float32 bit between processes in about 1 run in 6 (6 of 36 runs,
    the per-head losses and the weights identical); with it off, 0 of
    20.  The training step was as fast either way within the host's noise
    (224 px and 32 px, BN variant, two processes each).
    """
    tf.config.experimental.enable_op_determinism()
    tf.config.optimizer.set_experimental_options({"arithmetic_optimization": False})


def train(config: TrainConfig) -> dict[str, Any]:
    """Run (or resume) training as ``config`` says and return the summary written to ``summary.json``."""
    validate(config)
    config = replace(config, data=config.data.with_absolute_paths())  # saved configs work from any directory
    strategy = make_strategy(config.strategy, config.tpu)  # first: multi-worker set-up precedes other TF work
    chief = is_chief(strategy)
    run_dir = RunDir(Path(config.output_dir) / config.run_name, output_dir=config.output_dir)
    check_writable(Path(config.output_dir))
    bundle = load_data(config.data)  # bad data fails here, before anything is written
    resolved = {**asdict(config), "run_name": config.run_name}
    resuming = prepare(run_dir, resolved, config.overwrite, RESUME_KEYS, chief=chief)
    keras.utils.set_random_seed(config.data.seed)
    if config.deterministic:
        make_deterministic()
    started = time.time()
    state = run_dir.load_state()
    if resuming:
        model = resume_model(config, bundle, run_dir, state, strategy)
        print(f"Resuming {run_dir.path} after epoch {state.epochs_done} of {config.epochs}")
    else:
        model = new_model(config, bundle, strategy)
        if chief:
            write_json(run_dir.file(CONFIG_FILE), {**resolved, "versions": versions(),
                                                   "num_classes": bundle.num_classes,
                                                   "class_names": bundle.class_names,
                                                   "replicas": strategy.num_replicas_in_sync,
                                                   "effective_learning_rate": learning_rate_of(config)})
    fit(model, config, bundle, run_dir, state, chief)
    if not chief:
        print(f"{task_name(strategy)} finished training; the chief writes {run_dir.path}")
        return {"run_dir": str(run_dir.path), "chief": False, "epochs": config.epochs}
    summary = finish(config, bundle, run_dir, state, started)
    print_summary(summary)
    return summary


def print_summary(summary: dict[str, Any]) -> None:
    """Print the final metrics of the best model as a small table."""
    print(f"\nBest epoch {summary['best_epoch']} of {summary['epochs']} -> {summary['run_dir']}")
    columns = ("loss", "accuracy", "top5_accuracy", "macro_f1")
    print(f"{'split':<6}" + "".join(f"{c:>15}" for c in columns))
    for split, metrics in summary["splits"].items():
        cells = "".join(f"{metrics[c]:>15.4f}" if metrics.get(c) is not None else f"{'-':>15}" for c in columns)
        print(f"{split:<6}{cells}")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point for tests and notebooks: parse ``argv`` and train."""
    train(config_from_args(argv))
    return 0


def cli() -> None:
    """Console entry point: user errors become one ``error:`` line and exit status 2."""
    sys.exit(run_cli(main, interrupted="run the same command again to resume"))


if __name__ == "__main__":
    cli()

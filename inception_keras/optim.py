"""Optimizers and learning-rate schedules for training GoogLeNet.

The schedules are Keras ``LearningRateSchedule`` objects evaluated on the
optimizer's step counter, so a resumed run (which restores the optimizer's
``iterations``) continues exactly where it stopped.

* ``paper``: the paper's "decrease the learning rate by 4% every 8 epochs"
  (``lr * 0.96 ** floor(epoch / 8)``, staircase).
* ``cosine``: linear warm-up from 0 to ``lr`` over ``warmup_epochs``, then cosine
  decay to 0 at the end of training.
* ``constant``: ``lr`` throughout.

The optimizers are Keras' own SGD, Adam and AdamW; the training command
compiles their updates with XLA on TensorFlow
(:func:`inception_keras.speedups.accelerate`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import keras

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("paper", "cosine", "constant")
PAPER_DECAY_RATE = 0.96
PAPER_DECAY_EPOCHS = 8
# Bias, BatchNorm scale/offset and LRN have no weight decay (the usual practice; Caffe decayed biases 0x too).
NO_DECAY_NAMES = ["bias", "gamma", "beta"]


@dataclass
class OptimConfig:
    """How the weights are updated."""

    optimizer: str = "adamw"
    learning_rate: float = 2e-3
    lr_scaling: str = "none"  # "linear": learning_rate * global batch / 256 (applied by train.py)
    schedule: str = "cosine"
    warmup_epochs: float = 1.0
    weight_decay: float = 0.05
    momentum: float = 0.9
    ema: bool = False
    ema_momentum: float = 0.999


def make_schedule(config: OptimConfig, steps_per_epoch: int, epochs: int) -> float | keras.optimizers.schedules.LearningRateSchedule:
    """The learning rate (a float or a schedule over optimizer steps) described by ``config``."""
    if config.schedule == "constant":
        return config.learning_rate
    if config.schedule == "paper":
        return keras.optimizers.schedules.ExponentialDecay(
            config.learning_rate, decay_steps=PAPER_DECAY_EPOCHS * steps_per_epoch,
            decay_rate=PAPER_DECAY_RATE, staircase=True)
    if config.schedule == "cosine":
        if not 0 <= config.warmup_epochs < math.inf:
            raise ValueError(f"warmup_epochs must be >= 0 and finite, got {config.warmup_epochs}")
        total = max(1, steps_per_epoch * epochs)
        warmup = min(int(round(config.warmup_epochs * steps_per_epoch)), total - 1)
        if warmup == 0:
            return keras.optimizers.schedules.CosineDecay(config.learning_rate, decay_steps=total)
        return keras.optimizers.schedules.CosineDecay(
            0.0, decay_steps=total - warmup, warmup_target=config.learning_rate, warmup_steps=warmup)
    raise ValueError(f"unknown schedule {config.schedule!r}; choose one of {', '.join(SCHEDULES)}")


def make_optimizer(config: OptimConfig, steps_per_epoch: int, epochs: int) -> keras.optimizers.Optimizer:
    """A Keras optimizer with the schedule, weight decay (not on biases / BN) and optional EMA.

    ``sgd`` uses Nesterov-free momentum (the paper's 0.9); weight decay on SGD and
    Adam is Keras' decoupled form, applied with the learning rate.
    """
    learning_rate = make_schedule(config, steps_per_epoch, epochs)
    common = {"learning_rate": learning_rate, "weight_decay": config.weight_decay or None,
              "use_ema": config.ema, "ema_momentum": config.ema_momentum}
    if config.optimizer == "sgd":
        optimizer = keras.optimizers.SGD(momentum=config.momentum, **common)
    elif config.optimizer == "adam":
        optimizer = keras.optimizers.Adam(**common)
    elif config.optimizer == "adamw":
        optimizer = keras.optimizers.AdamW(**common)
    else:
        raise ValueError(f"unknown optimizer {config.optimizer!r}; choose one of {', '.join(OPTIMIZERS)}")
    if config.weight_decay:
        optimizer.exclude_from_weight_decay(var_names=NO_DECAY_NAMES)
    return optimizer


def current_learning_rate(optimizer: keras.optimizers.Optimizer) -> float:
    """The learning rate the optimizer applies at its current step."""
    inner = getattr(optimizer, "inner_optimizer", optimizer)  # LossScaleOptimizer under mixed_float16
    return float(keras.ops.convert_to_numpy(inner.learning_rate))

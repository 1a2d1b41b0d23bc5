"""Golden outputs: every variant's logits and training losses, pinned from seeded weights.

For each variant at 224 px, at an odd, mixed-parity size (97x75: ceil-mode pools where no Keras padding fits)
and with ``None`` sides (fed 128x144 images, so the aux heads pool to 2x2), a GoogLeNet with aux heads gets
deterministic weights (a NumPy generator seeded by each weight's path), then the test pins

* the three heads' logits in inference mode,
* the losses of two ``train_on_batch`` steps (plain SGD, dropout 0): the first is the loss at the seeded
  weights in training mode (batch statistics), the second the loss after one update,
* the logits in inference mode after that step (the BatchNorm moving statistics included).

The step is kept small on purpose: classifier kernels at a tenth of He's scale and a learning rate of 3e-5
move the loss by a few thousandths, so the pinned numbers depend smoothly on the gradient. A large step
(learning rate 0.01) turns float rounding in the gradient (ReLU and max-pool decisions that flip between CPU
kinds and kernels) into differences of 1e-3 after the step; with this one, oneDNN on and off agree to a tenth
of the tolerance.

The numbers live in ``tests/expect/googlenet_<variant>_<case>.npz`` (as torchvision's ``test/expect/``),
float32, compared within 1e-5. Any change to the model's layers must keep them. ``INCEPTION_KERAS_ACCEPT_GOLDEN=1`` writes the
file instead of comparing: only for a deliberate change of the network's function, never to make a test pass.
"""

from __future__ import annotations

import os
import zlib
from pathlib import Path

import keras
import numpy as np
import pytest

from inception_keras import build_googlenet, compile_googlenet

GOLDEN_DIR = Path(__file__).parent / "expect"
CLASSES = 10
BATCH = 4
LABELS = np.array([3, 7, 0, 9], dtype="int32")
LEARNING_RATE = 3e-5
# (case name, model input shape, image size fed).
SIZES = [("224", (224, 224, 3), (224, 224)), ("97x75", (97, 75, 3), (97, 75)),
         ("none", (None, None, 3), (128, 144))]
CASES = [(variant, *size) for variant in ("paper", "bn", "torchvision") for size in SIZES]
TOLERANCE = 1e-5


def seeded_value(path: str, name: str, shape: tuple[int, ...]) -> np.ndarray:
    """A deterministic value for one weight, from a generator seeded by its path (not by the weights' order)."""
    rng = np.random.default_rng(zlib.crc32(path.encode()))
    if name == "kernel":
        fan_in = int(np.prod(shape[:-1]))
        scale = 0.1 if len(shape) == 2 else 1.0  # classifiers: small logits, small gradients
        return rng.standard_normal(shape) * scale * np.sqrt(2.0 / fan_in)
    if name == "gamma":
        return 1.0 + 0.1 * rng.standard_normal(shape)
    if name == "moving_variance":
        return 1.0 + 0.5 * rng.random(shape)
    return 0.05 * rng.standard_normal(shape)  # bias, beta, moving_mean


def seed_weights(model: keras.Model) -> None:
    """Give every float weight of ``model`` its :func:`seeded_value`."""
    for variable in model.weights:
        if "float" not in str(variable.dtype):
            continue  # seed-generator states
        variable.assign(seeded_value(variable.path, variable.name, tuple(variable.shape)).astype("float32"))


def images(size: tuple[int, int]) -> np.ndarray:
    return np.random.default_rng(2014).uniform(-1.0, 1.0, (BATCH, *size, 3)).astype("float32")


def logits(model: keras.Model, x: np.ndarray) -> np.ndarray:
    """The three heads' logits in inference mode, stacked ``(3, batch, classes)``."""
    return np.stack([keras.ops.convert_to_numpy(head) for head in model(x, training=False)])


def golden_numbers(variant: str, input_shape: tuple, size: tuple[int, int]) -> dict[str, np.ndarray]:
    keras.utils.set_random_seed(0)
    model = build_googlenet(CLASSES, input_shape=input_shape, variant=variant, dropout=0.0, aux_dropout=0.0,
                            classifier_activation=None)
    seed_weights(model)
    x = images(size)
    before = logits(model, x)
    compile_googlenet(model, keras.optimizers.SGD(LEARNING_RATE), from_logits=True)
    labels = {"main": LABELS, "aux1": LABELS, "aux2": LABELS}
    losses = [model.train_on_batch(x, labels, return_dict=True)["loss"] for _ in range(2)]
    return {"logits": before, "losses": np.array(losses, dtype="float32"), "logits_after_step": logits(model, x)}


@pytest.mark.slow
@pytest.mark.parametrize("variant, case, input_shape, size", CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_outputs_and_training_losses_equal_the_golden_file(variant, case, input_shape, size):
    got = golden_numbers(variant, input_shape, size)
    path = GOLDEN_DIR / f"googlenet_{variant}_{case}.npz"
    if os.environ.get("INCEPTION_KERAS_ACCEPT_GOLDEN") == "1":
        GOLDEN_DIR.mkdir(exist_ok=True)
        np.savez(path, **got)
    expected = np.load(path)
    assert set(expected.files) == set(got)
    for key, value in got.items():
        np.testing.assert_allclose(value, expected[key], rtol=TOLERANCE, atol=TOLERANCE, err_msg=key)
    # The pinned numbers are not degenerate: logits differ per head and per image, and the step changed them.
    assert np.ptp(expected["logits"]) > 0.1 and np.isfinite(expected["losses"]).all()
    assert expected["losses"][0] - expected["losses"][1] > 1e-3
    assert np.abs(expected["logits_after_step"] - expected["logits"]).max() > 1e-2

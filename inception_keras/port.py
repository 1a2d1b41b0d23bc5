"""torchvision's googlenet weights in the ``torchvision`` variant, one tensor to one weight.

The ``torchvision`` variant has ``torchvision.models.googlenet``'s layout (3x3
"5x5" branches, 2x2 pool4, BatchNorm with eps 1e-3, adaptive 4x4 aux pooling),
and its pools have the same ceil-mode windows at every input size, so a
ported model computes what torchvision's does (logits equal to about 1e-6,
tests/test_port.py).  :func:`load_torchvision_weights` takes a ``state_dict``
(name -> tensor or NumPy array; PyTorch itself is not needed here) and writes
it into a Keras model, converting the layouts:

* convolution ``(out, in, kh, kw)`` -> ``(kh, kw, in, out)``; linear ``(out, in)`` -> ``(in, out)``;
* BatchNorm ``weight, bias, running_mean, running_var`` -> ``gamma, beta, moving_mean, moving_variance``;
* the aux heads' ``fc1`` reads torch's NCHW flattening (channel-major) where
  Keras flattens NHWC (channel-minor): its input rows are reordered.

For torchvision's ImageNet weights (``googlenet(weights="DEFAULT")``), feed RGB
images scaled to ``[-1, 1]`` (``2 * x - 1`` for ``x`` in ``[0, 1]``): with those
weights torchvision sets ``transform_input=True``, which turns its usual
ImageNet-normalised input back into exactly that before the first convolution.
Those weights come without aux heads (build with ``aux_heads=False``), and
1000 classes; this machine cannot download them, so only randomly initialised
torchvision models were compared here.
"""

from __future__ import annotations

from typing import Any, Mapping

import keras
import numpy as np

from .blocks import AUX_POOLED_SIDE
from .googlenet import INCEPTION_TABLE

AUX_CONV_FILTERS = 128

# torchvision module -> Keras conv unit (its conv layer name; BatchNorm is "<name>_bn").
STEM_UNITS = {"conv1": "conv1_7x7_s2", "conv2": "conv2_3x3_reduce", "conv3": "conv2_3x3"}
BRANCH_UNITS = {"branch1": "1x1", "branch2.0": "3x3_reduce", "branch2.1": "3x3", "branch3.0": "5x5_reduce",
                "branch3.1": "5x5", "branch4.1": "pool_proj"}


def conv_units(aux_heads: bool) -> dict[str, str]:
    """Every torchvision ``BasicConv2d`` (module path) and the Keras conv unit it becomes."""
    units = dict(STEM_UNITS)
    for block in INCEPTION_TABLE:
        units.update({f"inception{block.name}.{branch}": f"inception_{block.name}_{unit}"
                      for branch, unit in BRANCH_UNITS.items()})
    if aux_heads:
        units.update({f"{head}.conv": f"{head}_conv" for head in ("aux1", "aux2")})
    return units


def dense_layers(aux_heads: bool) -> dict[str, str]:
    """Every torchvision ``Linear`` (module path) and the Keras ``Dense`` it becomes."""
    layers = {"fc": "classifier"}
    if aux_heads:
        for head in ("aux1", "aux2"):
            layers.update({f"{head}.fc1": f"{head}_fc", f"{head}.fc2": f"{head}_classifier"})
    return layers


def aux_fc1_kernel(weight: np.ndarray) -> np.ndarray:
    """torch's aux ``fc1.weight`` ``(1024, C*4*4)`` over NCHW-flattened features as a Keras NHWC-flattened kernel."""
    side = AUX_POOLED_SIDE
    units, features = weight.shape
    by_position = weight.reshape(units, features // (side * side), side, side)  # (out, C, H, W)
    return by_position.transpose(2, 3, 1, 0).reshape(features, units)  # (H, W, C) rows, channel fastest


def load_torchvision_weights(model: keras.Model, state_dict: Mapping[str, Any]) -> keras.Model:
    """Write torchvision googlenet's ``state_dict`` into ``model`` (a ``torchvision``-variant GoogLeNet).

    ``model`` may have aux heads (then ``state_dict`` must hold ``aux1.*`` and
    ``aux2.*``) or not, and ``include_top=False`` (then ``fc.*`` is ignored).
    Raises a ValueError naming what is missing or of the wrong shape (another
    variant, another class count) before any weight is written.  Returns ``model``.
    """
    names = {layer.name for layer in model.layers}
    aux_heads = "aux1_conv" in names
    weights: dict[str, list[np.ndarray]] = {}
    for module, unit in conv_units(aux_heads).items():
        kernel = _tensor(state_dict, f"{module}.conv.weight").transpose(2, 3, 1, 0)
        weights[unit] = [kernel]
        weights[f"{unit}_bn"] = [_tensor(state_dict, f"{module}.bn.{key}")
                                 for key in ("weight", "bias", "running_mean", "running_var")]
    for module, layer in dense_layers(aux_heads).items():
        if layer not in names:
            continue  # include_top=False: no classifier
        kernel = _tensor(state_dict, f"{module}.weight")
        kernel = aux_fc1_kernel(kernel) if module.endswith(".fc1") else kernel.T
        weights[layer] = [kernel, _tensor(state_dict, f"{module}.bias")]
    _check_shapes(model, weights)
    for layer, values in weights.items():
        model.get_layer(layer).set_weights(values)
    return model


def _tensor(state_dict: Mapping[str, Any], key: str) -> np.ndarray:
    """``state_dict[key]`` as a float32 NumPy array (a torch tensor converts through ``__array__``)."""
    if key not in state_dict:
        raise ValueError(f"the state_dict has no {key!r}: is it torchvision's googlenet "
                         "(with aux_logits=True if the Keras model has aux heads)?")
    value = state_dict[key]
    if hasattr(value, "detach"):
        value = value.detach().cpu()
    return np.asarray(value, dtype=np.float32)


def _check_shapes(model: keras.Model, weights: Mapping[str, list[np.ndarray]]) -> None:
    """Raise a ValueError for the first layer that is missing or whose weight shapes differ."""
    for layer_name, values in weights.items():
        try:
            layer = model.get_layer(layer_name)
        except ValueError:
            raise ValueError(f"the model has no layer {layer_name!r}: build it with "
                             "build_googlenet(..., variant='torchvision')") from None
        expected = [tuple(w.shape) for w in layer.weights]
        given = [value.shape for value in values]
        if expected != given:
            raise ValueError(f"{layer_name}: the state_dict gives shapes {given}, the model has {expected}; build "
                             "the model with variant='torchvision' and the state_dict's number of classes")

"""The three fidelity settings of GoogLeNet that :func:`build_googlenet` offers.

* ``paper``: the network of the paper and of Caffe's ``bvlc_googlenet``: conv with
  bias + ReLU, LRN after ``pool1`` and after ``conv2``, true 5x5 convolutions,
  ``pool4`` 3x3/2, dropout 0.4, aux heads pooled 5x5/3.
* ``bn``: the paper's layout with BatchNorm after every convolution (no conv
  bias, the aux heads' 1x1 conv included) and no LRN.  Trains far better from
  scratch; the recommended default for training.
* ``torchvision``: the layout of ``torchvision.models.googlenet`` so its weights
  can be ported one to one (:func:`~inception_keras.port.load_torchvision_weights`): conv without bias + BatchNorm(eps=1e-3) + ReLU, the
  "5x5" branch with a 3x3 kernel (torchvision's known quirk, kept for the
  weights), ``pool4`` 2x2/2, main dropout 0.2, aux pooling always adaptive 4x4.

BatchNorm uses momentum 0.9 (PyTorch's 0.1 in Keras' convention) rather than
Keras' default 0.99: the moving statistics then settle within a few hundred
steps, so validation is meaningful from the first epoch of a short run.

Deviations from the paper shared by all variants are documented in
``googlenet.py`` and the README.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Variant:
    """Everything that differs between the variants, read by the block builders."""

    name: str
    batch_norm: bool
    bn_epsilon: float
    bn_momentum: float  # Keras convention (moving = momentum * moving + (1 - momentum) * batch)
    lrn: bool
    wide_kernel: int  # kernel of the "5x5" branch
    pool4_size: int  # pool4 is pool4_size x pool4_size, stride 2
    dropout: float  # main head dropout rate
    aux_pool: str  # "paper": 5x5/3 where that yields 4x4, else adaptive; "adaptive": always adaptive 4x4


VARIANTS: dict[str, Variant] = {
    "paper": Variant("paper", batch_norm=False, bn_epsilon=0.0, bn_momentum=0.0, lrn=True,
                     wide_kernel=5, pool4_size=3, dropout=0.4, aux_pool="paper"),
    "bn": Variant("bn", batch_norm=True, bn_epsilon=1e-3, bn_momentum=0.9, lrn=False,
                  wide_kernel=5, pool4_size=3, dropout=0.4, aux_pool="paper"),
    "torchvision": Variant("torchvision", batch_norm=True, bn_epsilon=1e-3, bn_momentum=0.9, lrn=False,
                           wide_kernel=3, pool4_size=2, dropout=0.2, aux_pool="adaptive"),
}


def get_variant(name: str) -> Variant:
    """Return the :class:`Variant` called ``name`` or raise a ValueError listing the valid names."""
    try:
        return VARIANTS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown variant {name!r}; choose one of {', '.join(VARIANTS)}") from None

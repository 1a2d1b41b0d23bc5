"""inception_keras: GoogLeNet (Inception-V1, Szegedy et al. 2014) for Keras 3 / TensorFlow.

>>> from inception_keras import build_googlenet, compile_googlenet, inference_model
>>> model = compile_googlenet(build_googlenet(10, input_shape=(96, 96, 3), variant="bn"))
"""

import os

# TensorFlow's C++ INFO/WARNING start-up lines (oneDNN, CPU features) drown the CLIs' output; errors still show.
# Set TF_CPP_MIN_LOG_LEVEL yourself before importing to see them.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from .cpu import prefer_onednn, warn_if_onednn_off  # noqa: E402 (cpu imports no TensorFlow at module level)

prefer_onednn()  # must precede the first TensorFlow import; see inception_keras/cpu.py

from .distribute import MultiWorkerModel
from .googlenet import INCEPTION_TABLE, MIN_INPUT_SIZE, build_googlenet, endpoints, feature_extractor
from .heads import SparseCategoricalCrossentropy, compile_googlenet, inference_model
from .layers import LRN
from . import legacy  # noqa: F401 (registers the class names that files of earlier versions use)
from .port import load_torchvision_weights
from .variants import VARIANTS

warn_if_onednn_off()

__version__ = "0.1.0"

__all__ = [
    "INCEPTION_TABLE",
    "LRN",
    "MIN_INPUT_SIZE",
    "MultiWorkerModel",
    "SparseCategoricalCrossentropy",
    "VARIANTS",
    "build_googlenet",
    "compile_googlenet",
    "endpoints",
    "feature_extractor",
    "inference_model",
    "load_torchvision_weights",
]

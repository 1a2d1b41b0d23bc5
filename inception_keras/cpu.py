"""oneDNN on every x86 CPU: TensorFlow's fast CPU kernels, which it turns on by itself only on some CPUs.

TensorFlow's x86 wheels are compiled for AVX without FMA; their fast convolution,
pooling and matmul kernels are oneDNN's, which pick AVX2 / AVX-512 code at run
time.  TensorFlow enables oneDNN by default only on CPUs with AVX-512 VNNI, BF16
or AMX.  On an AVX2-only CPU (an AMD EPYC Zen 3, 2 cores, batch 32, 224 px) it
leaves oneDNN off, and measured there with ``python -m inception_keras.benchmark``:
the float32 matmul runs at 82 instead of 164 GFLOP/s, the ``bn`` training step
at 5.7 instead of 8.8 images/s (``MaxPoolGrad`` alone took a quarter of the step),
inference at 30.8 instead of 32.7.

``inception_keras`` therefore sets ``TF_ENABLE_ONEDNN_OPTS=1`` when it is imported
before TensorFlow, unless the variable is already set (``TF_ENABLE_ONEDNN_OPTS=0``
keeps it off).  TensorFlow reads the variable once, when it is imported: if
TensorFlow came first with oneDNN off, :func:`warn_if_onednn_off` says how to fix it.

:func:`cpu_flags` reads the CPU's instruction-set flags, which decide the mixed
precision the benchmark offers.
"""

from __future__ import annotations

import contextlib
import functools
import os
import platform
import warnings
from pathlib import Path

ONEDNN_VARIABLE = "TF_ENABLE_ONEDNN_OPTS"


def on_x86() -> bool:
    """Whether this is an x86-64 machine, the only kind whose TensorFlow wheels have the oneDNN switch."""
    return platform.machine().lower() in ("x86_64", "amd64")


@functools.cache  # read once
def cpu_flags() -> frozenset[str]:
    """The CPU feature flags (``avx2``, ``avx512f`` ...) from ``/proc/cpuinfo`` on Linux; empty elsewhere."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def prefer_onednn() -> None:
    """Ask for oneDNN (before TensorFlow is imported), leaving an explicit user setting alone."""
    os.environ.setdefault(ONEDNN_VARIABLE, "1")


def onednn_enabled() -> bool | None:
    """Whether this TensorFlow process runs oneDNN kernels (None if TensorFlow does not say)."""
    try:
        from tensorflow.python.util import _pywrap_util_port  # private, but the only place TF exposes it
    except ImportError:
        return None
    return bool(_pywrap_util_port.IsMklEnabled())


def warn_if_onednn_off() -> None:
    """Warn when oneDNN is off only because TensorFlow was imported before ``inception_keras``."""
    if not on_x86():
        return  # elsewhere (Apple silicon, ...) TensorFlow may have no oneDNN to turn on
    if os.environ.get(ONEDNN_VARIABLE) == "1" and onednn_enabled() is False:
        warnings.warn("TensorFlow was imported before inception_keras, with oneDNN off: on this CPU training "
                      f"is up to 1.5x slower. Set {ONEDNN_VARIABLE}=1 before importing TensorFlow "
                      "(or import inception_keras first).", RuntimeWarning, stacklevel=3)

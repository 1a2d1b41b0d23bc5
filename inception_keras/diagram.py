"""Drawings of the architecture: one inception module, and the whole network stage by stage.

Both are drawn with matplotlib alone (no graphviz, no pydot) on a ``matplotlib.figure.Figure``
created directly, as in :mod:`inception_keras.plots`: it renders with Agg, needs no display and
never touches pyplot's state, so it is safe in scripts, tests and notebooks alike.

* :func:`draw_inception_module`: the four branches of a module with the filter counts of
  :data:`~inception_keras.googlenet.INCEPTION_TABLE` and the variant's kernel in the "5x5" branch.
* :func:`draw_network`: every stage of a model built by :func:`build_googlenet`, each box with the
  output shape of its real layer, and the auxiliary heads branching off their taps.

``python -m inception_keras.diagram docs/figures`` writes both as PNGs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import keras
from matplotlib.figure import Figure
from matplotlib.patches import FancyBboxPatch, Patch

from .googlenet import AUX_TAPS, INCEPTION_TABLE, build_googlenet
from .layers import LRN
from .plots import save_figure
from .variants import get_variant

# Box colours by kind of layer.
COLOURS = {"input": "#e0e0e0", "reduce": "#fff2b3", "conv": "#b9d7f0", "pool": "#f5c1b8", "norm": "#d9d2e9",
           "inception": "#bfe3bf", "head": "#f9d9a8"}
KIND_NAMES = {"conv": "convolution", "pool": "pooling", "norm": "LRN", "inception": "inception module",
              "head": "classifier head"}
# Layers that do not change what a reader needs to see: padding, activations, BatchNorm, flatten.
HIDDEN_LAYERS = (keras.layers.ZeroPadding2D, keras.layers.ReLU, keras.layers.BatchNormalization,
                 keras.layers.Flatten)
MAIN_STEP, MAIN_WIDTH, MAIN_HEIGHT = 0.56, 0.44, 1.9  # the main path, left to right (inches)
AUX_STEP, AUX_WIDTH, AUX_HEIGHT = 0.42, 1.6, 0.28  # an auxiliary head, top to bottom (inches)


def _box(ax, centre, size, text, colour, fontsize=8.0, rotation=0):
    """A rounded box of ``size`` (width, height) around ``centre`` with ``text`` in its middle."""
    (x, y), (width, height) = centre, size
    ax.add_patch(FancyBboxPatch((x - width / 2, y - height / 2), width, height,
                                boxstyle="round,pad=0,rounding_size=0.06", facecolor=colour, edgecolor="#555555",
                                linewidth=0.8))
    ax.text(x, y, text, ha="center", va="center", fontsize=fontsize, rotation=rotation, linespacing=1.3)


def _arrow(ax, start, end):
    """An arrow from point ``start`` to point ``end``."""
    ax.annotate("", xy=end, xytext=start, arrowprops={"arrowstyle": "-|>", "color": "#444444", "linewidth": 0.8,
                                                      "shrinkA": 0, "shrinkB": 0, "mutation_scale": 8})


def _canvas(ax, width, height):
    """The axes to draw on (a new figure's when ``ax`` is None), spanning ``width`` x ``height`` inches."""
    if ax is None:
        ax = Figure(figsize=(width, height), layout="constrained").subplots()
    ax.set(xlim=(0, width), ylim=(0, height), aspect="equal")
    ax.set_axis_off()
    return ax


def _spec(name):
    """The :class:`InceptionSpec` of ``"inception_3a"`` or ``"3a"``, or a ValueError listing the names."""
    short = name.removeprefix("inception_")
    for spec in INCEPTION_TABLE:
        if spec.name == short:
            return spec
    names = ", ".join(f"inception_{spec.name}" for spec in INCEPTION_TABLE)
    raise ValueError(f"unknown inception module {name!r}; choose one of {names}")


def draw_inception_module(name: str = "inception_3a", variant: str = "paper", ax=None) -> Figure:
    """The four branches of one inception module with their filter counts, from input to concatenation.

    The counts are the module's row of ``INCEPTION_TABLE``; the kernel of the "5x5" branch is the
    variant's (3x3 for ``torchvision``, as its weights need).
    """
    spec, wide = _spec(name), get_variant(variant).wide_kernel
    branches = [
        [(f"1x1 conv\n{spec.branch_1x1}", "conv")],
        [(f"1x1 reduce\n{spec.reduce_3x3}", "reduce"), (f"3x3 conv\n{spec.branch_3x3}", "conv")],
        [(f"1x1 reduce\n{spec.reduce_5x5}", "reduce"), (f"{wide}x{wide} conv\n{spec.branch_5x5}", "conv")],
        [("3x3 max pool\nstride 1", "pool"), (f"1x1 pool proj\n{spec.pool_proj}", "reduce")],
    ]
    width, height, box = 6.4, 4.8, (1.25, 0.55)
    ax = _canvas(ax, width, height)
    top, bottom = (width / 2, height - 0.85), (width / 2, 0.45)
    _box(ax, top, (width - 0.8, 0.5), "input (previous layer)", COLOURS["input"], fontsize=9)
    total = "+".join(str(count) for count in (spec.branch_1x1, spec.branch_3x3, spec.branch_5x5, spec.pool_proj))
    _box(ax, bottom, (width - 0.8, 0.6), f"depth concatenation\n{total} = {spec.output_channels} channels",
         COLOURS["inception"], fontsize=9)
    for column, branch in enumerate(branches):
        x = 0.8 + column * (width - 1.6) / (len(branches) - 1)
        rows = [height - 1.75 - row * 1.15 for row in range(len(branch))] if len(branch) > 1 else [2.3]
        _arrow(ax, (x, top[1] - 0.25), (x, rows[0] + box[1] / 2))
        for row, (y, (text, kind)) in enumerate(zip(rows, branch)):
            _box(ax, (x, y), box, text, COLOURS[kind], fontsize=9)
            if row:
                _arrow(ax, (x, rows[row - 1] - box[1] / 2), (x, y + box[1] / 2))
        _arrow(ax, (x, rows[-1] - box[1] / 2), (x, bottom[1] + 0.3))
    quirk = f'; the "5x5" branch is {wide}x{wide} in this variant' if wide != 5 else ""
    ax.text(width / 2, height - 0.02, f"inception {spec.name} ({variant} variant)", ha="center", va="top",
            fontsize=10, weight="bold")
    ax.text(width / 2, height - 0.27, f"filters per convolution{quirk}", ha="center", va="top", fontsize=8.5,
            style="italic")
    return ax.figure


def _sides(shape) -> str:
    """A shape as ``28x28x480``, unknown sides as ``?``."""
    return "x".join("?" if side is None else str(side) for side in shape)


def _shape(layer) -> str:
    """A layer's output shape without the batch axis."""
    return _sides(layer.output.shape[1:])


def _describe(layer, modules) -> tuple[str, str]:
    """``(label, kind)`` of a drawn layer: what it does, read from the layer itself."""
    if layer.name in modules:
        return f"inception {modules[layer.name]}", "inception"
    if isinstance(layer, keras.layers.InputLayer):
        return "input", "input"
    if isinstance(layer, keras.layers.Conv2D):
        kernel, stride = layer.kernel_size[0], layer.strides[0]
        return f"conv {kernel}x{kernel}" + (f"/{stride}" if stride > 1 else ""), "conv"
    if isinstance(layer, (keras.layers.MaxPooling2D, keras.layers.AveragePooling2D)):
        kind = "max" if isinstance(layer, keras.layers.MaxPooling2D) else "avg"
        return f"{kind} pool {layer.pool_size[0]}x{layer.pool_size[1]}/{layer.strides[0]}", "pool"
    if isinstance(layer, keras.layers.AdaptiveAveragePooling2D):
        return "adaptive avg pool", "pool"
    if isinstance(layer, keras.layers.GlobalAveragePooling2D):
        return "global avg pool", "pool"
    if isinstance(layer, LRN):
        return "LRN", "norm"
    if isinstance(layer, keras.layers.Dropout):
        return f"dropout {layer.rate:g}", "head"
    if isinstance(layer, keras.layers.Dense):
        return "FC", "head"
    if isinstance(layer, keras.layers.Activation):
        return f"{layer.name} ({keras.activations.serialize(layer.activation)})", "head"
    return type(layer).__name__, "conv"


def _paths(model) -> tuple[list, dict[str, list]]:
    """The drawn layers of the main path and of each aux head, in build order.

    Layers inside an inception module are summed up by its output layer; padding, ReLU and
    BatchNorm are left out.
    """
    main, aux = [], {head: [] for head in AUX_TAPS}
    for layer in model.layers:
        if isinstance(layer, HIDDEN_LAYERS):
            continue
        if layer.name.startswith("inception_") and not layer.name.endswith("_output"):
            continue
        head = next((h for h in AUX_TAPS if layer.name == h or layer.name.startswith(f"{h}_")), None)
        (aux[head] if head else main).append(layer)
    return main, aux


def draw_network(variant: str = "paper", input_shape: tuple = (224, 224, 3), ax=None) -> Figure:
    """GoogLeNet stage by stage, left to right, each box labelled with its real output shape.

    The shapes come from a model built with ``build_googlenet(1000, input_shape=..., variant=...)``
    (not run), so they are what the package builds at that size; the auxiliary heads hang below
    the modules they tap (``AUX_TAPS``).
    """
    model = build_googlenet(1000, input_shape=tuple(input_shape), variant=variant)
    modules = {f"inception_{spec.name}_output": spec.name for spec in INCEPTION_TABLE}
    main, aux = _paths(model)
    longest = max(len(layers) for layers in aux.values())
    width = MAIN_STEP * len(main) + 0.3
    height = MAIN_HEIGHT + 0.7 + AUX_STEP * longest + 0.5
    ax = _canvas(ax, width, height)
    y_main = height - 0.45 - MAIN_HEIGHT / 2
    x_of = {}
    for index, layer in enumerate(main):
        x_of[layer.name] = x = 0.15 + MAIN_STEP * (index + 0.5)
        label, kind = _describe(layer, modules)
        _box(ax, (x, y_main), (MAIN_WIDTH, MAIN_HEIGHT), f"{label}\n{_shape(layer)}", COLOURS[kind], rotation=90)
        if index:
            _arrow(ax, (x - MAIN_STEP + MAIN_WIDTH / 2, y_main), (x - MAIN_WIDTH / 2, y_main))
    tap_bottom = y_main - MAIN_HEIGHT / 2
    for head, layers in aux.items():
        x = x_of[f"inception_{AUX_TAPS[head]}_output"]
        for index, layer in enumerate(layers):
            y = tap_bottom - 0.3 - AUX_HEIGHT / 2 - AUX_STEP * index
            start = tap_bottom if index == 0 else y + AUX_STEP - AUX_HEIGHT / 2
            _arrow(ax, (x, start), (x, y + AUX_HEIGHT / 2))
            label, kind = _describe(layer, modules)
            _box(ax, (x, y), (AUX_WIDTH, AUX_HEIGHT), f"{label}  {_shape(layer)}", COLOURS[kind], fontsize=7)
    title = f"GoogLeNet ({variant} variant, {_sides(input_shape)} input): output shape of every stage"
    ax.text(0.15, height - 0.05, title, ha="left", va="top", fontsize=10, weight="bold")
    drawn = {_describe(layer, modules)[1] for layer in main + sum(aux.values(), [])}
    ax.legend(handles=[Patch(facecolor=COLOURS[kind], edgecolor="#555555", label=label)
                       for kind, label in KIND_NAMES.items() if kind in drawn],
              loc="lower left", fontsize=8, frameon=False)
    return ax.figure


def main(argv: list[str] | None = None) -> int:
    """Write ``inception_module.png`` (module 3a) and ``googlenet.png`` (224 px) into a folder."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("out_dir", type=Path, help="folder for the PNGs (created if missing)")
    parser.add_argument("--variant", default="paper", help="paper, bn or torchvision (default: paper)")
    args = parser.parse_args(argv)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    for filename, figure in (("inception_module.png", draw_inception_module(variant=args.variant)),
                             ("googlenet.png", draw_network(args.variant))):
        print(save_figure(figure, args.out_dir / filename))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""diagram: the drawings carry the table's filter counts and the real model's shapes, and save as PNGs."""

import matplotlib.image
import pytest
from matplotlib.figure import Figure
from matplotlib.text import Text

from inception_keras import INCEPTION_TABLE
from inception_keras.diagram import draw_inception_module, draw_network
from inception_keras.plots import save_figure


def labels(figure):
    """Every non-empty text drawn on the figure (box labels, titles, legend entries)."""
    return [text.get_text() for text in figure.findobj(Text) if text.get_text()]


@pytest.fixture(scope="module")
def network_224():
    """The paper variant at 224 px (built, never run)."""
    return draw_network("paper", (224, 224, 3))


def test_module_3a_shows_the_table_counts_and_the_concatenated_channels():
    figure = draw_inception_module("inception_3a")
    assert isinstance(figure, Figure)
    texts = labels(figure)
    for label in ("1x1 conv\n64", "1x1 reduce\n96", "3x3 conv\n128", "1x1 reduce\n16", "5x5 conv\n32",
                  "3x3 max pool\nstride 1", "1x1 pool proj\n32", "input (previous layer)"):
        assert label in texts, label
    assert "depth concatenation\n64+128+32+32 = 256 channels" in texts
    assert any("inception 3a (paper variant)" in text for text in texts)


def test_every_module_of_the_table_can_be_drawn_by_either_name():
    for spec in INCEPTION_TABLE:
        texts = labels(draw_inception_module(spec.name))
        assert f"depth concatenation\n{spec.branch_1x1}+{spec.branch_3x3}+{spec.branch_5x5}+{spec.pool_proj} = " \
               f"{spec.output_channels} channels" in texts
    assert "1x1 conv\n384" in labels(draw_inception_module("inception_5b"))
    with pytest.raises(ValueError, match="inception_3a, inception_3b"):
        draw_inception_module("inception_6a")


def test_torchvision_module_has_a_3x3_kernel_in_the_5x5_branch():
    texts = labels(draw_inception_module("inception_3a", variant="torchvision"))
    assert "3x3 conv\n32" in texts and "5x5 conv\n32" not in texts
    assert any('the "5x5" branch is 3x3' in text for text in texts)
    with pytest.raises(ValueError, match="unknown variant"):
        draw_inception_module(variant="resnet")


def test_module_draws_into_a_given_axes():
    figure = Figure()
    ax = figure.subplots()
    assert draw_inception_module(ax=ax) is figure
    assert "3x3 conv\n128" in [text.get_text() for text in ax.texts]


def test_network_labels_every_block_of_the_table_with_its_224_px_shape(network_224):
    texts = labels(network_224)
    for spec in INCEPTION_TABLE:
        assert sum(text.startswith(f"inception {spec.name}\n") for text in texts) == 1, spec.name
    for label in ("input\n224x224x3", "conv 7x7/2\n112x112x64", "max pool 3x3/2\n56x56x64", "LRN\n56x56x64",
                  "conv 3x3\n56x56x192", "LRN\n56x56x192", "max pool 3x3/2\n28x28x192",
                  "inception 3a\n28x28x256", "inception 3b\n28x28x480", "max pool 3x3/2\n14x14x480",
                  "inception 4d\n14x14x528", "inception 4e\n14x14x832", "max pool 3x3/2\n7x7x832",
                  "inception 5b\n7x7x1024", "global avg pool\n1024", "dropout 0.4\n1024", "FC\n1000",
                  "main (softmax)\n1000"):
        assert label in texts, label


def test_network_shows_both_aux_heads_in_order(network_224):
    texts = labels(network_224)
    for head, channels in (("aux1", 512), ("aux2", 528)):  # the taps: 4a and 4d
        head_labels = [f"avg pool 5x5/3  4x4x{channels}", "conv 1x1  4x4x128", "FC  1024", "dropout 0.7  1024",
                       "FC  1000", f"{head} (softmax)  1000"]
        assert all(label in texts for label in head_labels), head
    assert texts.count("conv 1x1  4x4x128") == 2
    main_path = [text for text in texts if "\n" in text and not text.startswith("GoogLeNet")]
    names = [text.split("\n")[0] for text in main_path if text.startswith("inception ")]
    assert names == [f"inception {spec.name}" for spec in INCEPTION_TABLE]  # left to right, as built


def test_network_follows_the_variant_and_the_input_size():
    texts = labels(draw_network("torchvision", (64, 48, 1)))
    assert "input\n64x48x1" in texts and "inception 5b\n2x2x1024" in texts
    assert "max pool 2x2/2\n2x2x832" in texts  # torchvision's pool4
    assert not any(text.startswith("LRN") for text in texts)  # BatchNorm, no LRN (and no LRN legend entry)
    assert "adaptive avg pool  4x4x512" in texts and "dropout 0.2\n1024" in texts


def test_figures_save_as_readable_pngs(tmp_path, network_224):
    shapes = {}
    for name, figure in (("module", draw_inception_module()), ("network", network_224)):
        path = save_figure(figure, tmp_path / f"{name}.png")
        assert path.stat().st_size > 10_000
        pixels = matplotlib.image.imread(path)
        shapes[name] = pixels.shape
        assert pixels.shape[2] in (3, 4) and 300 <= pixels.shape[0] <= 1000 and 500 <= pixels.shape[1] <= 2000
        assert pixels.min() < 0.5 < pixels.max()  # not blank: dark text on a light background
    assert shapes["network"][1] > 2 * shapes["network"][0]  # a wide chain, left to right

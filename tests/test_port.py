"""load_torchvision_weights: layouts converted (against an independent NumPy conversion), errors, and, where
PyTorch is installed, logits equal to torchvision's own googlenet at several input sizes."""

import importlib.util
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

from inception_keras import build_googlenet, inference_model
from inception_keras.port import conv_units, dense_layers, load_torchvision_weights

CLASSES = 6


def torch_layout_state_dict(model: keras.Model) -> dict[str, np.ndarray]:
    """``model``'s weights as torchvision names them and lays them out (written independently of port.py)."""
    state = {}
    for module, unit in conv_units(aux_heads=True).items():
        state[f"{module}.conv.weight"] = np.transpose(model.get_layer(unit).get_weights()[0], (3, 2, 0, 1))
        for key, value in zip(("weight", "bias", "running_mean", "running_var"),
                              model.get_layer(f"{unit}_bn").get_weights(), strict=True):
            state[f"{module}.bn.{key}"] = value
        state[f"{module}.bn.num_batches_tracked"] = np.array(7)
    for module, layer in dense_layers(aux_heads=True).items():
        kernel, bias = model.get_layer(layer).get_weights()
        if module.endswith(".fc1"):  # Keras rows run over (h, w, c); torch's columns over (c, h, w)
            features, units = kernel.shape
            kernel = kernel.reshape(4, 4, features // 16, units).transpose(2, 0, 1, 3).reshape(features, units)
        state[f"{module}.weight"], state[f"{module}.bias"] = kernel.T, bias
    return state


def randomise_batchnorm(model: keras.Model, seed: int) -> None:
    """Non-trivial BatchNorm statistics, so a swapped mean / variance would show."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if layer.name.endswith("_bn"):
            channels = layer.get_weights()[0].shape
            layer.set_weights([rng.uniform(0.5, 1.5, channels), rng.uniform(-0.2, 0.2, channels),
                               rng.uniform(-0.2, 0.2, channels), rng.uniform(0.5, 1.5, channels)])


def test_ported_weights_reproduce_every_head():
    keras.utils.set_random_seed(1)
    source = build_googlenet(CLASSES, input_shape=(64, 64, 3), variant="torchvision", classifier_activation=None)
    randomise_batchnorm(source, 1)
    keras.utils.set_random_seed(2)
    target = build_googlenet(CLASSES, input_shape=(64, 64, 3), variant="torchvision", classifier_activation=None)
    load_torchvision_weights(target, torch_layout_state_dict(source))
    x = np.random.default_rng(0).uniform(-1, 1, (2, 64, 64, 3)).astype("float32")
    for expected, got in zip(source(x, training=False), target(x, training=False), strict=True):
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_wrong_variant_class_count_or_missing_aux_heads_raise_before_writing():
    source = build_googlenet(CLASSES, input_shape=(64, 64, 3), variant="torchvision")
    state = torch_layout_state_dict(source)
    paper = build_googlenet(CLASSES, input_shape=(64, 64, 3), variant="paper")
    before = [w.copy() for w in paper.get_weights()]
    with pytest.raises(ValueError, match="variant='torchvision'"):
        load_torchvision_weights(paper, state)
    assert all(np.array_equal(a, b) for a, b in zip(before, paper.get_weights(), strict=True))
    with pytest.raises(ValueError, match="number of classes"):
        load_torchvision_weights(build_googlenet(CLASSES + 1, input_shape=(64, 64, 3), variant="torchvision"), state)
    without_aux = {key: value for key, value in state.items() if not key.startswith("aux")}
    with pytest.raises(ValueError, match="aux_logits=True"):
        load_torchvision_weights(build_googlenet(CLASSES, input_shape=(64, 64, 3), variant="torchvision"),
                                 without_aux)
    single = build_googlenet(CLASSES, input_shape=(64, 64, 3), variant="torchvision", aux_heads=False)
    assert load_torchvision_weights(single, without_aux) is single


TORCHVISION_SCRIPT = textwrap.dedent("""
    import sys, numpy as np, torch, torchvision
    torch.manual_seed(0)
    net = torchvision.models.googlenet(weights=None, aux_logits=True, init_weights=True, transform_input=False,
                                       num_classes=int(sys.argv[2])).eval()
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                for tensor, low, high in ((module.weight, 0.5, 1.5), (module.bias, -0.2, 0.2),
                                          (module.running_mean, -0.2, 0.2), (module.running_var, 0.5, 1.5)):
                    tensor.uniform_(low, high)
        for linear in (net.fc, net.aux1.fc2, net.aux2.fc2):
            linear.weight.mul_(100)  # logits of order 1, not 0.01
    taps = {}
    net.inception4a.register_forward_hook(lambda m, i, o: taps.update(aux1=o))
    net.inception4d.register_forward_hook(lambda m, i, o: taps.update(aux2=o))
    out = {f"state/{k}": v.numpy() for k, v in net.state_dict().items()}
    rng = np.random.default_rng(0)
    for size in sys.argv[3:]:
        height, width = (int(side) for side in size.split("x"))
        images = rng.uniform(-1, 1, (2, height, width, 3)).astype("float32")
        with torch.no_grad():
            main = net(torch.from_numpy(images.transpose(0, 3, 1, 2)))
            out[f"{size}/images"], out[f"{size}/main"] = images, main.numpy()
            for head in ("aux1", "aux2"):
                out[f"{size}/{head}"] = getattr(net, head)(taps[head]).numpy()
    np.savez(sys.argv[1], **out)
""")


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("torchvision") is None, reason="PyTorch / torchvision not installed")
def test_matches_torchvision_googlenet_at_several_sizes(tmp_path):
    """Equal logits need the same layouts, BatchNorm, 3x3 "5x5" branches and ceil-mode pool sizes (odd sizes)."""
    sizes = ["224x224", "200x200", "97x64"]
    path = tmp_path / "torchvision.npz"
    subprocess.run([sys.executable, "-c", TORCHVISION_SCRIPT, str(path), str(CLASSES), *sizes], check=True,
                   timeout=600)  # its own process: PyTorch's threads stay out of this one
    saved = np.load(path)
    state = {key.removeprefix("state/"): saved[key] for key in saved.files if key.startswith("state/")}
    for size in sizes:
        height, width = (int(side) for side in size.split("x"))
        model = build_googlenet(CLASSES, input_shape=(height, width, 3), variant="torchvision",
                                classifier_activation=None)
        load_torchvision_weights(model, state)
        outputs = dict(zip(model.output_names, model(saved[f"{size}/images"], training=False), strict=True))
        for head in ("main", "aux1", "aux2"):
            reference = saved[f"{size}/{head}"]
            assert np.abs(reference).max() > 0.5  # a meaningful scale
            np.testing.assert_allclose(outputs[head], reference, atol=2e-5, err_msg=f"{size} {head}")
    single = inference_model(model)
    np.testing.assert_allclose(single(saved["97x64/images"]), saved["97x64/main"], atol=2e-5)

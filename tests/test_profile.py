"""profile: op names and groups, per-step sums and conv GFLOP/s on hand-made events, and a real traced step."""

import json

import pytest
import tensorflow as tf

from inception_keras import build_googlenet
from inception_keras.errors import run_cli
from inception_keras.flops import per_layer_multiply_adds
from inception_keras.profile import convolution_layers, group_of, layer_of, main, op_type, summarise


@pytest.mark.parametrize("raw, kind, group", [
    ("_MklNativeConv2DBackpropFilter", "Conv2DBackpropFilter", "convolution"),
    ("_MklNativeFusedConv2D", "FusedConv2D", "convolution"),
    ("_MklNativePadWithFusedConv2D", "PadWithFusedConv2D", "convolution"),
    ("Conv2D", "Conv2D", "convolution"),
    ("_MklNativeFusedBatchNormEx", "FusedBatchNormEx", "batch norm"),
    ("_MklNativeMaxPoolGrad", "MaxPoolGrad", "pooling"),
    ("ReluGrad", "ReluGrad", "relu"),
    ("ConcatV2", "ConcatV2", "concat / slices / sums"),
    ("_MklMatMul", "MatMul", "matmul"),
    ("AssignVariableOp", "AssignVariableOp", "other"),
    ("XLA executable", "XLA executable", "XLA-compiled functions"),
])
def test_op_type_drops_onednn_prefixes_and_groups(raw, kind, group):
    assert op_type(raw) == kind and group_of(kind) == group


@pytest.fixture(scope="module")
def tiny_model():
    return build_googlenet(5, input_shape=(64, 64, 3), variant="bn")


def test_layer_of_finds_the_layer_in_a_keras_call_scope(tiny_model):
    layers = convolution_layers(tiny_model)
    assert layer_of("gradient_tape/googlenet_1/inception_3a_1x1_1/convolution/Conv2DBackpropFilter",
                    layers).name == "inception_3a_1x1"
    assert layer_of("googlenet/conv2_3x3/convolution", layers).name == "conv2_3x3"
    assert layer_of("googlenet_inference_folded_1/conv2_3x3_relu_1/Relu", layers).name == "conv2_3x3"  # fused
    assert layer_of("Adam/update/mul", layers) is None


def test_summarise_sums_per_step_and_computes_conv_gflops(tiny_model):
    scope = "gradient_tape/googlenet_1/{}_1/convolution"
    events = [(scope.format("conv2_3x3"), "Conv2D", 4.0), (scope.format("conv2_3x3"), "Conv2D", 2.0),
              (scope.format("conv2_3x3"), "Conv2DBackpropFilter", 8.0),
              (scope.format("inception_3a_1x1"), "Conv2DBackpropInput", 1.0),
              ("googlenet_1/conv2_3x3_bn_1/FusedBatchNormV3", "FusedBatchNormEx", 3.0),
              ("Adam/mul", "Mul", 2.0)]
    result = summarise(events, tiny_model, steps=2, batch_size=8)
    assert result["op_ms_per_step"] == pytest.approx(10.0)
    assert {row["group"]: row["ms_per_step"] for row in result["groups"]} == pytest.approx(
        {"convolution": 7.5, "batch norm": 1.5, "other": 1.0})
    assert sum(row["share"] for row in result["groups"]) == pytest.approx(1.0)
    convs = {(row["kernel"], row["pass"]): row for row in result["convolutions"]}
    assert set(convs) == {("3x3", "forward"), ("3x3", "filter gradient"), ("1x1", "input gradient")}
    flops = 2 * 8 * per_layer_multiply_adds(tiny_model)["conv2_3x3"]  # one pass of conv2_3x3 on 8 images
    assert convs[("3x3", "forward")]["ms_per_step"] == pytest.approx(3.0)
    assert convs[("3x3", "forward")]["gflops_per_s"] == pytest.approx(flops / 3e-3 / 1e9)
    assert convs[("3x3", "filter gradient")]["gflops_per_s"] == pytest.approx(flops / 4e-3 / 1e9)


@pytest.mark.slow
@pytest.mark.parametrize("task", ["training", "inference"])
def test_a_traced_step_attributes_every_convolution(tmp_path, capsys, task):
    output = tmp_path / "profile.json"
    argv = ["--task", task, "--image-size", "64", "--batch-size", "2", "--num-classes", "3", "--warmup", "1",
            "--steps", "1", "--inter-op-threads", "0", "--output", str(output)]
    assert run_cli(main, argv) == 0
    result = json.loads(output.read_text())
    groups = {row["group"]: row["ms_per_step"] for row in result["groups"]}
    passes = {row["pass"] for row in result["convolutions"]}
    kernels = {row["kernel"] for row in result["convolutions"]}
    # Every convolution op of the trace is found in a layer: the per-kernel rows add up to the group.
    assert sum(row["ms_per_step"] for row in result["convolutions"]) == pytest.approx(groups["convolution"])
    assert kernels == {"1x1", "3x3", "5x5", "7x7"}
    assert passes == ({"forward", "input gradient", "filter gradient"} if task == "training" else {"forward"})
    assert all(row["gflops_per_s"] > 0 for row in result["convolutions"])
    assert 0 < result["op_ms_per_step"] and result["step_ms"] > 0
    if task == "training":  # the optimizer's update is compiled with XLA (inception_keras.optim)
        assert groups["XLA-compiled functions"] > 0
    assert "| convolution |" in capsys.readouterr().out


def test_user_errors_exit_2_and_write_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("inception_keras.benchmark.cpu_flags", lambda: {"avx2"})  # no bfloat16 instructions
    for argv in (["--image-size", "16"], ["--output", str(tmp_path / "p.txt")], ["--task", "predict"],
                 ["--precision", "mixed"] if not tf.config.list_physical_devices("GPU") else ["--steps", "0"]):
        assert run_cli(main, argv) == 2
        error = capsys.readouterr().err
        assert error.startswith("error: ") and error.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


def test_inter_op_threads_cannot_change_once_tensorflow_runs():
    from inception_keras.profile import set_inter_op_threads

    tf.constant(1.0) + 1.0  # TensorFlow has run an op: its thread pools are fixed now
    assert set_inter_op_threads(0) == "default"
    with pytest.warns(UserWarning, match="inter-op threads stay at its default, not 1"):
        assert set_inter_op_threads(1) == "default (TensorFlow was already running)"

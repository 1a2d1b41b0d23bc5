"""The benchmark: option checks, interleaved timing, the summary maths, and a tiny end-to-end run."""

import json

import keras
import pytest

from inception_keras import benchmark
from inception_keras.benchmark import Contender, format_table, main, measure, parse_speedups, pipeline_summary, summarise
from inception_keras.cpu import on_x86
from inception_keras.errors import UserError, run_cli



@pytest.mark.parametrize("argv, message", [
    (["--image-size", "16"], "--image-size"),
    (["--tflite", "float32,int4"], "int4"),
    (["--runs", "0"], "--runs"),
    (["--output", "results.txt"], ".json"),
    (["--variant", "resnet"], "invalid choice"),
    (["--also-variants", "paper,resnet"], "--also-variants"),
    (["--sub-batches", "33"], "--sub-batches"),
    (["--sub-batches", "-1"], "--sub-batches"),
    (["--dataset", "nosuch"], "unknown dataset 'nosuch'"),  # before any model is built or timed
    (["--dataset", "sample", "--data-dir", "/nonexistent-data-dir"], "data_dir /nonexistent-data-dir is not"),
])
def test_user_errors_exit_2_and_write_nothing(tmp_path, capsys, argv, message):
    output = tmp_path / "bench.json"
    argv = argv if "--output" in argv else [*argv, "--output", str(output)]
    assert run_cli(main, argv) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: ") and message in error and error.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


def test_an_unwritable_output_is_refused_before_measuring(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert run_cli(main, ["--output", str(blocker / "bench.json")]) == 2
    assert capsys.readouterr().err == (f"error: cannot write to {blocker}: {blocker} is not a writable directory; "
                                       "choose another --output\n")
    assert list(tmp_path.iterdir()) == [blocker]


def test_tflite_none_and_defaults():
    settings = benchmark.settings_from_args(["--tflite", "none"])
    assert settings.tflite == () and settings.variant == "bn" and settings.image_size == 224
    assert benchmark.settings_from_args([]).tflite == ("float32", "dynamic", "int8")
    assert benchmark.settings_from_args(["--also-variants", "paper, bn"]).also_variants == ("paper",)


def test_measure_interleaves_rounds_after_warmup():
    calls = []
    first = Contender("a", "inference", lambda: calls.append("a"), work=1)
    second = Contender("b", "inference", lambda: calls.append("b") or (0.5, 0.8), work=1)  # times itself
    measure([first, second], warmup=2, runs=3, log=lambda _: None)
    assert calls == ["a", "a", "b", "b"] + ["a", "b"] * 3
    assert len(first.seconds) == 3 and len(first.cpu_seconds) == 3
    assert second.seconds == [0.5, 0.5, 0.5] and second.cpu_seconds == [0.8, 0.8, 0.8]


def test_summary_ratios():
    contenders = [
        Contender("keras training", "training", lambda: None, work=32, flops_per_image=6e9, seconds=[2.0, 4.0, 3.0],
                  cpu_seconds=[4.0, 4.0, 4.0]),
        Contender("torchvision training", "training", lambda: None, work=32, flops_per_image=6e9,
                  seconds=[4.0, 5.0, 2.0], cpu_seconds=[16.0, 16.0, 16.0], baseline=True),
        Contender("pipeline only", "pipeline", lambda: None, work=100, seconds=[1.0]),
    ]
    rows = {row["name"]: row for row in summarise(contenders, matmul_flops=200e9)}
    keras_row = rows["keras training"]
    assert keras_row["images_per_second"] == pytest.approx(32 / 3.0)
    assert keras_row["gflops"] == pytest.approx(32 / 3.0 * 6)
    assert keras_row["matmul_fraction"] == pytest.approx(32 / 3.0 * 6 / 200)
    assert keras_row["vs_torchvision"] == pytest.approx(4.0 / 3.0)
    assert keras_row["vs_torchvision_best"] == pytest.approx((32 / 3.0) / (32 / 2.0))  # torchvision's fastest run
    assert keras_row["vs_torchvision_cpu"] == pytest.approx(4.0)
    assert keras_row["cpu_images_per_second"] == pytest.approx(32 / 4.0 * benchmark.os.cpu_count())
    assert rows["pipeline only"]["gflops"] is None and rows["pipeline only"]["vs_torchvision"] is None
    assert rows["pipeline only"]["cpu_images_per_second"] is None
    table = format_table(list(rows.values()))
    assert table.splitlines()[0].startswith("| what | task | images/s | GFLOP/s")
    assert "| keras training | training | 10.7 | 64.0 | 32 | 1.33 | 0.67 |" in table


def test_pipeline_summary():
    rows = [{"name": "training, real pipeline", "images_per_second": 95.0},
            {"name": "training, in-memory batch", "images_per_second": 100.0}]
    assert pipeline_summary(rows)["slowdown_percent"] == pytest.approx(5.0)
    assert pipeline_summary(rows[:1]) is None


def test_mixed_precision_policy(monkeypatch):
    monkeypatch.setattr(benchmark.tf.config, "list_physical_devices", lambda kind=None: [])
    monkeypatch.setattr(benchmark, "cpu_flags", lambda: {"avx2"})
    with pytest.raises(UserError, match="bfloat16"):
        benchmark.mixed_policy()
    monkeypatch.setattr(benchmark, "cpu_flags", lambda: {"avx2", "avx512_bf16"})
    assert benchmark.mixed_policy() == "mixed_bfloat16"


def test_speedups_option_reads_all_none_or_names():
    assert parse_speedups("all") == ("fused_batch_norm", "conv_bias", "xla_lrn", "compiled_updates")
    assert parse_speedups("none") == ()
    assert parse_speedups("xla_lrn, conv_bias") == ("xla_lrn", "conv_bias")
    with pytest.raises(UserError, match="--speedups: unknown speed-up 'fast'"):
        parse_speedups("fast")


@pytest.mark.slow
def test_memory_allocator_is_the_preloaded_one(monkeypatch):
    """torchvision's speed depends on the allocator, so the results name it (LD_PRELOAD, inherited by workers)."""
    cases = {"": "system malloc", "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4": "tcmalloc",
             "/opt/libfoo.so /usr/lib/libjemalloc.so.2": "jemalloc", "libfoo.so:libmimalloc.so": "mimalloc",
             "/usr/lib/libfoo.so": "system malloc"}
    for preload, expected in cases.items():
        monkeypatch.setenv("LD_PRELOAD", preload)
        assert benchmark.memory_allocator() == expected, preload
    monkeypatch.delenv("LD_PRELOAD")
    assert benchmark.machine_info()["allocator"] == "system malloc"


def test_tiny_run_writes_every_field(tmp_path, capsys, monkeypatch):
    output = tmp_path / "bench.json"
    status = main(["--image-size", "32", "--batch-size", "4", "--num-classes", "5", "--warmup", "1",
                   "--runs", "1", "--tflite", "float32", "--matmul-size", "64", "--dataset", "sample",
                   "--pipeline-image-size", "32", "--sub-batches", "2", "--output", str(output)])
    assert status == 0
    results = json.loads(output.read_text())
    assert set(results) >= {"settings", "machine", "load_average", "matmul", "model", "results", "pipeline", "notes"}
    assert results["machine"]["allocator"] == benchmark.memory_allocator()
    assert results["settings"]["image_size"] == 32 and results["matmul"]["gflops"] > 0
    assert results["model"]["multiply_adds_inference"] < results["model"]["multiply_adds_training"]
    rows = {row["name"]: row for row in results["results"]}
    expected = {"keras training", "keras training, no speed-ups", "keras inference",
                "keras inference, no speed-ups", "keras inference, BN folded", "tflite float32",
                "keras inference, BN folded, 2 sub-batches", "pipeline only", "training, real pipeline",
                "training, in-memory batch"}
    assert results["settings"]["speedups"] == list(parse_speedups("all"))
    assert expected <= set(rows)
    for row in rows.values():
        assert row["images_per_second"] > 0 and len(row["runs_images_per_second"]) == 1
    assert rows["keras training"]["gflops"] > 0 and rows["keras training"]["matmul_fraction"] > 0
    assert "intra-op threads 1, inter-op 2" in rows["keras inference, BN folded, 2 sub-batches"]["note"]
    assert "pipeline_over_in_memory" in results["pipeline"]
    if benchmark.torch_installed():
        assert rows["torchvision training"]["vs_torchvision"] == pytest.approx(1.0)
        assert rows["keras training"]["vs_torchvision"] > 0
    else:
        assert any("torchvision skipped" in note for note in results["notes"])
    printed = capsys.readouterr().out
    assert "| keras training | training |" in printed
    assert f"Keras {keras.__version__}, {benchmark.memory_allocator()}" in printed
    if on_x86():  # tests import inception_keras first: oneDNN on
        assert results["machine"]["onednn"] is True and "(oneDNN on)" in printed
        assert not any("without oneDNN" in note for note in results["notes"])

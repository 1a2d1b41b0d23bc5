"""oneDNN is on after importing inception_keras first, off only when the user says so, and a late import warns; the CPU flags."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from inception_keras.cpu import ONEDNN_VARIABLE, cpu_flags, on_x86, onednn_enabled

ROOT = Path(__file__).parents[1]
X86 = on_x86()


def run_python(code: str, **env: str) -> subprocess.CompletedProcess:
    """``code`` in a fresh interpreter (TensorFlow reads the variable once, at import), ``env`` added or removed."""
    environ = {k: v for k, v in os.environ.items() if k != ONEDNN_VARIABLE}
    environ.update(env, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="2", PYTHONWARNINGS="always")
    return subprocess.run([sys.executable, "-c", code], env=environ, capture_output=True, text=True, timeout=300)


REPORT = "import os; from inception_keras.cpu import onednn_enabled; print(os.environ.get('TF_ENABLE_ONEDNN_OPTS'), onednn_enabled())"


@pytest.mark.skipif(not X86, reason="TensorFlow's oneDNN switch is for x86 CPUs")
def test_this_test_process_runs_onednn():
    assert onednn_enabled() is True


@pytest.mark.skipif(not X86, reason="TensorFlow's oneDNN switch is for x86 CPUs")
def test_package_first_turns_onednn_on():
    done = run_python("import inception_keras; " + REPORT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["1", "True"]
    assert "oneDNN off" not in done.stderr


@pytest.mark.skipif(not X86, reason="TensorFlow's oneDNN switch is for x86 CPUs")
def test_an_explicit_zero_is_kept_without_warning():
    done = run_python("import inception_keras; " + REPORT, TF_ENABLE_ONEDNN_OPTS="0")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["0", "False"]
    assert "oneDNN off" not in done.stderr


@pytest.mark.skipif(not X86, reason="TensorFlow's oneDNN switch is for x86 CPUs")
def test_tensorflow_first_warns_only_if_it_left_onednn_off():
    """TF's own default is on for AVX-512 VNNI / BF16 / AMX CPUs, off on AVX2-only ones: warn exactly then."""
    done = run_python("import tensorflow; import inception_keras; " + REPORT)
    assert done.returncode == 0, done.stderr
    variable, enabled = done.stdout.split()
    assert variable == "1"
    warned = "TensorFlow was imported before inception_keras, with oneDNN off" in done.stderr
    assert warned == (enabled == "False")


def test_cpu_flags_are_read_from_proc_cpuinfo():
    path = Path("/proc/cpuinfo")
    if not path.is_file():
        assert cpu_flags() == set()
        return
    line = next(line for line in path.read_text().splitlines() if line.startswith("flags"))
    assert cpu_flags() == set(line.split(":", 1)[1].split()) and ("sse2" in cpu_flags()) == X86

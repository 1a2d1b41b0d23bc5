"""The notebooks: they run top to bottom on real data, take every model, layer and metric from the package, and
open with a papermill ``parameters`` cell.

The slow tests execute the three notebooks in fresh ``python3`` kernels with the quick parameters of
``notebooks/execute.py`` (one epoch of 3 batches on the bundled sample at 32 px): 02 trains a run into a
temporary directory and 03 evaluates that run.  The committed copies are read, never written.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import re
import time
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"


def _load_executor():
    spec = importlib.util.spec_from_file_location("notebooks_execute", NOTEBOOK_DIR / "execute.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


execute = _load_executor()
NOTEBOOKS = execute.NOTEBOOKS
CELL_TIMEOUT = 900  # seconds per cell: the training cell traces the model (about a minute) on a busy CPU

# What a notebook must take from inception_keras instead of defining it: models, layers, losses, metrics, training.
FORBIDDEN = {
    "a class definition": re.compile(r"^\s*class\s", re.M),
    "a function definition": re.compile(r"^\s*(async\s+)?def\s", re.M),
    "Keras layers": re.compile(r"\bkeras\.layers\b|\bfrom keras import layers\b|\blayers\.[A-Z]\w*\("),
    "a Sequential model": re.compile(r"\bSequential\("),
    "Keras metrics or losses": re.compile(r"\bkeras\.(metrics|losses)\b"),
    "scikit-learn (metrics come from inception_keras.evaluate)": re.compile(r"\bsklearn\b"),
    "tf.keras": re.compile(r"\btf\.keras\b"),
    "its own training loop (use inception_keras.train)": re.compile(r"\.(fit|compile|train_on_batch)\("),
}


def read(name: str) -> nbformat.NotebookNode:
    return nbformat.read(NOTEBOOK_DIR / name, as_version=4)


def code_cells(nb: nbformat.NotebookNode) -> list[nbformat.NotebookNode]:
    return [cell for cell in nb.cells if cell.cell_type == "code"]


def tags(cell: nbformat.NotebookNode) -> list[str]:
    return cell.get("metadata", {}).get("tags", [])


def text_of(nb: nbformat.NotebookNode) -> str:
    """All text and Markdown outputs of the code cells, joined."""
    parts = []
    for cell in code_cells(nb):
        for output in cell.get("outputs", []):
            if output.output_type == "stream":
                parts.append(output.text)
            elif output.output_type in ("display_data", "execute_result"):
                parts.append(output.data.get("text/markdown", "") or output.data.get("text/plain", ""))
    return "\n".join(parts)


def images_in(nb: nbformat.NotebookNode) -> int:
    return sum("image/png" in output.get("data", {}) for cell in code_cells(nb) for output in cell.get("outputs", []))


# --- the committed copies (fast) -------------------------------------------------------------------------

@pytest.mark.parametrize("name", NOTEBOOKS)
def test_first_code_cell_is_the_parameters_cell(name):
    cells = code_cells(read(name))
    assert "parameters" in tags(cells[0]), f"{name}: the first code cell must be tagged 'parameters'"
    assignments = ast.parse(cells[0].source).body
    assert all(isinstance(statement, ast.Assign) for statement in assignments), \
        f"{name}: the parameters cell should hold plain assignments only"
    names = {target.id for statement in assignments for target in statement.targets}
    overridden = set(execute.quick_parameters("/tmp")[name])
    assert overridden <= names, f"{name}: the quick run overrides parameters it does not define: {overridden - names}"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_no_model_layer_or_metric_is_defined_outside_the_package(name):
    for index, cell in enumerate(code_cells(read(name))):
        for what, pattern in FORBIDDEN.items():
            assert not pattern.search(cell.source), f"{name}, code cell {index}: defines or uses {what}:\n{cell.source}"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_committed_copy_carries_the_outputs_of_one_clean_run(name):
    cells = code_cells(read(name))
    counts = [cell.execution_count for cell in cells]
    assert counts == list(range(1, len(cells) + 1)), f"{name}: execute it top to bottom once (execution counts {counts})"
    errors = [output for cell in cells for output in cell.outputs if output.output_type == "error"]
    assert not errors, f"{name}: the committed outputs hold an error: {errors[0].get('ename')}"


def test_every_notebook_starts_with_a_title_and_explains_each_step():
    for name in NOTEBOOKS:
        nb = read(name)
        assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# "), name
        markdown = sum(cell.cell_type == "markdown" for cell in nb.cells)
        assert markdown >= len(code_cells(nb)) // 2, f"{name}: {markdown} Markdown cells for {len(code_cells(nb))} code cells"


# --- executing them (slow) -------------------------------------------------------------------------------

def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    """Run 01, 02 and 03 with the quick parameters, in that order; ``{name: (notebook, seconds)}`` and the work dir."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        KernelSpecManager().get_kernel_spec(execute.KERNEL_NAME)
    except NoSuchKernel:
        pytest.fail("no 'python3' Jupyter kernel: run `python -m ipykernel install --sys-prefix`")
    work = tmp_path_factory.mktemp("notebooks")
    parameters = execute.quick_parameters(work)
    committed = {name: digest(NOTEBOOK_DIR / name) for name in NOTEBOOKS}
    results = {}
    for name in NOTEBOOKS:
        started = time.perf_counter()
        nb = execute.execute_notebook(NOTEBOOK_DIR / name, parameters[name], output=work / name, timeout=CELL_TIMEOUT)
        results[name] = (nb, time.perf_counter() - started)
    assert {name: digest(NOTEBOOK_DIR / name) for name in NOTEBOOKS} == committed, "a committed notebook was modified"
    print("notebook execution times: " + ", ".join(f"{name} {seconds:.0f} s" for name, (_, seconds) in results.items()))
    return results, work


@pytest.mark.slow
def test_architecture_notebook_counts_the_real_model(executed):
    results, _ = executed
    nb, _ = results["01_architecture.ipynb"]
    text = text_of(nb)
    assert "6,998,552 trainable parameters, 1.58 G multiply-adds" in text  # paper variant, 1000 classes, 224 px
    assert "| inception 3a | 28x28x192 | 303.5 M" in text  # the naive module's cost from the real layer shapes
    assert "same output as 'main': True" in text
    for variant, pinned in (("paper", "13,378,280"), ("bn", "13,385,816"), ("torchvision", "13,004,888")):
        assert re.search(rf"\| {variant}\s+\|[^\n]*\| {pinned}\s+\|", text), f"{variant}: {pinned} params with aux heads"


@pytest.mark.slow
def test_training_notebook_trains_a_run_and_plots_it(executed):
    results, work = executed
    nb, _ = results["02_training.ipynb"]
    run = work / "runs" / "quick"
    assert (run / "summary.json").is_file() and (run / "history.csv").is_file() and (run / "inference.keras").is_file()
    text = text_of(nb)
    assert "finished run" not in text  # a fresh directory: it trained
    assert "python -m inception_keras.train --recipe fashion_mnist --dataset sample" in text
    assert "Wall time:" in text and "| test " in text
    assert images_in(nb) >= 3  # sample grid, augmentation, curves


@pytest.mark.slow
def test_evaluation_notebook_reports_every_split_and_ten_crops(executed):
    results, work = executed
    nb, _ = results["03_evaluation.ipynb"]
    text = text_of(nb)
    for split in ("train", "val", "test"):
        assert f"| {split} precision |" in text or f"{split} precision" in text, split
    assert "10 crops" in text and "with ten" in text
    assert images_in(nb) >= 3  # confusion matrix, per-class F1, misclassified
    assert (work / "figures" / "curves.png").is_file() and (work / "figures" / "confusion_matrix.png").is_file()


@pytest.mark.slow
def test_training_notebook_loads_a_finished_run_instead_of_training(executed):
    """Run 02 again on the finished quick run: it must load the summary, not train or fail."""
    results, work = executed
    parameters = execute.quick_parameters(work)["02_training.ipynb"]
    first = (work / "runs" / "quick" / "summary.json").read_bytes()
    nb = execute.execute_notebook(NOTEBOOK_DIR / "02_training.ipynb", parameters, timeout=CELL_TIMEOUT)
    assert "is a finished run: loading its summary.json instead of training again" in text_of(nb)
    assert (work / "runs" / "quick" / "summary.json").read_bytes() == first

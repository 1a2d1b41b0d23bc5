"""Execute the notebooks top to bottom with nbclient and save them with their outputs.

    python notebooks/execute.py                 # in place, against the full Fashion-MNIST run (committed outputs)
    python notebooks/execute.py --quick         # in place, a tiny budget on the bundled sample (a few minutes)
    python notebooks/execute.py --quick --out /tmp/nb 02_training.ipynb 03_evaluation.ipynb

The full mode uses the notebooks' own parameters: 02_training.ipynb finds the finished run
``runs/fashion_mnist_bn_32px`` (trained by ``python -m inception_keras.train --recipe fashion_mnist``) and
shows it, or trains it when it is missing (about an hour on 2 CPU cores); 03_evaluation.ipynb evaluates it
and saves ``notebooks/figures/curves.png`` and ``confusion_matrix.png`` for the README.  The quick mode
injects the parameters of :func:`quick_parameters` (what ``tests/test_notebooks.py`` runs) and writes its
run into a temporary directory.

Parameters are injected as papermill does: a cell tagged ``injected-parameters`` right after the cell tagged
``parameters``; an injected cell from an earlier execution is replaced.  The kernel is ``python3``
(``python -m ipykernel install --sys-prefix`` creates it) and runs in this folder, as Jupyter would.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Mapping

import nbformat
from nbclient import NotebookClient

NOTEBOOK_DIR = Path(__file__).resolve().parent
NOTEBOOKS = ("01_architecture.ipynb", "02_training.ipynb", "03_evaluation.ipynb")
KERNEL_NAME = "python3"
# TensorFlow's C++ start-up lines (oneDNN, absl) go to the process' stderr even with TF_CPP_MIN_LOG_LEVEL set;
# without fd capture they reach this terminal instead of the notebook's outputs. Python output is unaffected.
KERNEL_ARGUMENTS = ["--IPKernelApp.capture_fd_output=False"]
PARAMETERS_TAG = "parameters"
INJECTED_TAG = "injected-parameters"
FULL_RUN = NOTEBOOK_DIR.parent / "runs" / "fashion_mnist_bn_32px"
BUSY_SECONDS = 15 * 60  # a run whose history changed this recently is probably being trained right now


def quick_parameters(work_dir: str | Path) -> dict[str, dict[str, Any]]:
    """The tiny budget: one epoch of 3 batches on the bundled sample at 32 px, runs and figures in ``work_dir``."""
    work_dir = Path(work_dir)
    runs = work_dir / "runs"
    return {
        "01_architecture.ipynb": {},
        "02_training.ipynb": {"dataset": "sample", "image_size": 32, "epochs": 1, "batch_size": 64,
                              "max_train_batches": 3, "max_val_batches": 2, "output_dir": str(runs),
                              "run_name": "quick"},
        "03_evaluation.ipynb": {"run_dir": str(runs / "quick"), "figures_dir": str(work_dir / "figures")},
    }


def inject_parameters(nb: nbformat.NotebookNode, parameters: Mapping[str, Any]) -> nbformat.NotebookNode:
    """Drop any earlier injected cell; with ``parameters``, insert one after the ``parameters`` cell."""
    nb.cells = [cell for cell in nb.cells if INJECTED_TAG not in cell.get("metadata", {}).get("tags", [])]
    if not parameters:
        return nb
    index = next((i for i, cell in enumerate(nb.cells)
                  if PARAMETERS_TAG in cell.get("metadata", {}).get("tags", [])), None)
    if index is None:
        raise ValueError("the notebook has no cell tagged 'parameters'")
    source = "# Parameters\n" + "\n".join(f"{name} = {value!r}" for name, value in parameters.items())
    cell = nbformat.v4.new_code_cell(source)
    cell.metadata["tags"] = [INJECTED_TAG]
    nb.cells.insert(index + 1, cell)
    return nb


def execute_notebook(source: str | Path, parameters: Mapping[str, Any] | None = None,
                     output: str | Path | None = None, timeout: int | None = None) -> nbformat.NotebookNode:
    """Run ``source`` top to bottom in a fresh ``python3`` kernel started in the notebooks folder.

    Raises nbclient's ``CellExecutionError`` on the first failing cell.  Saves the executed notebook to
    ``output`` when given (``source`` itself is only written when ``output`` is ``source``).
    """
    nb = inject_parameters(nbformat.read(source, as_version=4), parameters or {})
    client = NotebookClient(nb, kernel_name=KERNEL_NAME, timeout=timeout, record_timing=False,
                            extra_arguments=KERNEL_ARGUMENTS, resources={"metadata": {"path": str(NOTEBOOK_DIR)}})
    client.execute()
    if output is not None:
        nbformat.write(nb, output)
    return nb


def check_full_run_idle(run: Path = FULL_RUN) -> None:
    """Refuse to resume a run that another process seems to be training (its history changed recently)."""
    if not run.is_dir() or (run / "summary.json").exists():
        return
    recent = [p.stat().st_mtime for p in (run / "history.csv", run / "config.json") if p.exists()]
    if recent and time.time() - max(recent) < BUSY_SECONDS:
        sys.exit(f"{run} is not finished and changed {(time.time() - max(recent)) / 60:.0f} min ago: if it is "
                 "being trained, wait for its summary.json (or pass --force to resume it from here)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="*", default=list(NOTEBOOKS), help="notebook names (default: all three)")
    parser.add_argument("--quick", action="store_true", help="tiny budget on the bundled sample")
    parser.add_argument("--out", help="write the executed notebooks here instead of in place")
    parser.add_argument("--force", action="store_true", help="execute even if the full run looks busy")
    args = parser.parse_args(argv)
    if not args.quick and not args.force:
        check_full_run_idle()
    out_dir = Path(args.out) if args.out else NOTEBOOK_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    work_dir = Path(tempfile.mkdtemp(prefix="notebooks_quick_")) if args.quick else None
    for name in args.notebooks:
        name = Path(name).name
        parameters = quick_parameters(work_dir)[name] if work_dir else {}
        started = time.perf_counter()
        print(f"executing {name}" + (f" with {parameters}" if parameters else ""), flush=True)
        execute_notebook(NOTEBOOK_DIR / name, parameters, output=out_dir / name)
        print(f"  done in {time.perf_counter() - started:.0f} s -> {out_dir / name}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

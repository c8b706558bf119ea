"""The headless runner: numeric order, stop at the first failure naming notebook, cell and error; no silent overwrite."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

from helpers.files import read_json
from helpers.runner import NotebookFailed, run_workbook, workbook_notebooks

pytestmark = pytest.mark.notebook


def _notebook(path: Path, *sources: str) -> Path:
    cells = [nbformat.v4.new_code_cell("PROFILE = 'cpu'\nRUN_DIR = None")]
    cells[0].metadata["tags"] = ["parameters"]
    cells += [nbformat.v4.new_code_cell(s) for s in sources]
    nb = nbformat.v4.new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


def test_workbook_notebooks_are_in_numeric_order(tmp_path):
    for name in ("10_last.ipynb", "02_second.ipynb", "01_first.ipynb", "notes.ipynb"):
        _notebook(tmp_path / name)
    assert [p.name for p in workbook_notebooks(tmp_path)] == ["01_first.ipynb", "02_second.ipynb", "10_last.ipynb"]


def test_runner_stops_at_the_first_failure_and_names_it(tmp_path):
    notebooks = [
        _notebook(tmp_path / "01_ok.ipynb", "print(PROFILE, RUN_DIR)"),
        _notebook(tmp_path / "02_fail.ipynb", "x = 1", "raise ValueError('bad row 7')"),
        _notebook(tmp_path / "03_never.ipynb", "open('ran', 'w')"),
    ]
    run_dir = tmp_path / "run"
    with pytest.raises(NotebookFailed) as failure:
        run_workbook("tiny", run_dir, notebooks=notebooks)
    message = str(failure.value)
    assert "02_fail.ipynb" in message and "code cell 3 (\"raise ValueError" in message and "ValueError: bad row 7" in message
    record = read_json(run_dir / "run.json")
    assert record["status"] == "failed"
    machine = record["machine"]  # what the run's times depend on
    assert machine["cpu_cores"] >= 1 and isinstance(machine["fast_bfloat16"], bool)
    assert set(machine["matmul_gflops"]) == {"float32", "bfloat16"}
    assert record["notebooks"]["01_ok.ipynb"]["status"] == "finished"
    assert "03_never.ipynb" not in record["notebooks"]
    executed = nbformat.read(run_dir / "notebooks" / "01_ok.ipynb", as_version=4)
    assert "tiny " + str(run_dir) in executed.cells[-1].outputs[0]["text"]  # parameters reached the notebook


def test_a_finished_run_is_not_silently_overwritten(tmp_path):
    notebooks = [_notebook(tmp_path / "01_ok.ipynb", "print('hello')")]
    run_dir = tmp_path / "run"
    assert run_workbook("tiny", run_dir, notebooks=notebooks)["status"] == "finished"
    with pytest.raises(FileExistsError, match="finished run.*--rerun"):
        run_workbook("tiny", run_dir, notebooks=notebooks)
    with pytest.raises(FileExistsError, match="profile 'tiny'"):
        run_workbook("cpu", run_dir, notebooks=notebooks, rerun=True)
    rerun = run_workbook("tiny", run_dir, notebooks=notebooks, rerun=True)
    assert rerun["status"] == "finished" and rerun["earlier_runs"][0]["status"] == "finished"

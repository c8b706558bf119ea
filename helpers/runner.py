"""Run the workbook headless: every ``notebooks/NN_*.ipynb`` in numeric order, with papermill.

    python -m helpers.runner --profile tiny                 # -> runs/tiny/
    python -m helpers.runner --profile cpu --run-dir runs/cpu-2

Each notebook receives ``PROFILE`` and ``RUN_DIR`` through its ``parameters``
cell and is written, executed, to ``<run-dir>/notebooks/``. The run stops at the
first failing notebook and names the notebook, the cell and the error.

Finished runs are left intact: the runner records progress in
``<run-dir>/run.json``; a run folder whose run finished is refused unless
``--rerun`` is given. Then the stages reuse their finished artifacts (nothing is
recomputed), the executed notebooks are written again, and ``run.json`` keeps the
earlier runs' records under ``earlier_runs``. An interrupted run is simply resumed: finished
stages are reused, and long stages resume from their logs. A finished run ends with its report
(``report.html`` and ``report.md``, see ``helpers.report``).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from pathlib import Path

from .browser import STATIC_RENDERER, static_export_available
from .config import PROFILES
from .files import read_json, write_json
from .models import fast_bfloat16_cpu, matmul_rates
from .report import write_report
from .runs import REPO_ROOT, default_run_dir, now

NOTEBOOK_PATTERN = re.compile(r"^(\d{2})_.+\.ipynb$")


class NotebookFailed(RuntimeError):
    """A notebook raised; the message names the notebook, the cell and the error."""


def workbook_notebooks(folder: Path = REPO_ROOT / "notebooks") -> list[Path]:
    """The numbered notebooks, in numeric order."""
    found = [p for p in folder.iterdir() if NOTEBOOK_PATTERN.match(p.name)]
    return sorted(found, key=lambda p: int(NOTEBOOK_PATTERN.match(p.name).group(1)))


def _failed_cell(executed: Path) -> str:
    """'code cell N' (counted in the source notebook) and the cell's first line, from the executed copy."""
    import nbformat  # lazy: nbformat takes a second to import; only a failed notebook needs it

    nb = nbformat.read(executed, as_version=4)
    code_cells = [c for c in nb.cells if c.cell_type == "code" and "injected-parameters" not in c.metadata.get("tags", [])]
    for number, cell in enumerate(code_cells, start=1):
        if any(output.get("output_type") == "error" for output in cell.get("outputs", [])):
            first = next((line for line in cell.source.splitlines() if line.strip()), "")
            return f"code cell {number} ({first[:60]!r})"
    return "an unknown cell"


def kernel_environment() -> dict[str, str]:
    """What the runner sets for the kernels it starts (they inherit ``os.environ``).

    ``RLHF_HEADLESS`` gives text progress bars. ``PLOTLY_RENDERER`` adds a PNG beside each
    interactive plotly figure, so static viewers show the plots too, when kaleido and a
    Chromium can make one here, and unless the user chose a renderer.
    """
    env = {"RLHF_HEADLESS": "1"}
    if static_export_available()[0] and "PLOTLY_RENDERER" not in os.environ:
        env["PLOTLY_RENDERER"] = STATIC_RENDERER
    return env


def execute_notebook(notebook: Path, output: Path, parameters: dict, cwd: Path) -> None:
    """Execute one notebook with papermill; NotebookFailed on error."""
    import papermill  # lazy: papermill takes seconds to import; only executing a notebook needs it

    output.parent.mkdir(parents=True, exist_ok=True)
    env = kernel_environment()
    env_before = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    try:
        papermill.execute_notebook(str(notebook), str(output), parameters=parameters, kernel_name="python3",
                                   progress_bar=False, cwd=str(cwd), log_output=False)
    except papermill.PapermillExecutionError as err:
        raise NotebookFailed(
            f"{notebook.name} failed at {_failed_cell(output)}: {err.ename}: {err.evalue}\n"
            f"The executed copy, with the traceback, is {output}"
        ) from None
    finally:
        for name, value in env_before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def machine_record() -> dict:
    """What the run's times depend on: cores, native bfloat16, and the measured fp32 / bf16 matmul rates."""
    import torch  # lazy: torch takes a second to import; only the machine record needs it

    return {"cpu_cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "fast_bfloat16": fast_bfloat16_cpu(), "matmul_gflops": matmul_rates(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def run_workbook(profile: str, run_dir: Path, *, rerun: bool = False, notebooks: list[Path] | None = None,
                 out=sys.stdout) -> dict:
    """Execute the notebooks in order into ``run_dir``; returns the run record (also in ``run.json``)."""
    if profile not in PROFILES:
        raise ValueError(f"profile: {profile!r} is not a profile; choose one of {', '.join(PROFILES)}")
    notebooks = workbook_notebooks() if notebooks is None else notebooks
    run_dir = run_dir.resolve()
    record_path = run_dir / "run.json"
    if record_path.exists():
        record = read_json(record_path)
        if record.get("status") == "finished" and not rerun:
            raise FileExistsError(
                f"{run_dir} holds a finished run ({record.get('finished')}). Choose a new folder "
                f"(make run RUN_DIR=runs/{profile}-2), or pass --rerun to execute the notebooks again "
                "(finished stages are reused, not recomputed)."
            )
        if record.get("profile") != profile:
            raise FileExistsError(f"{run_dir} holds a run of profile {record.get('profile')!r}, not {profile!r}.")
        earlier = record.pop("earlier_runs", []) + [record]  # keep the history of this folder's runs
    else:
        earlier = []
    record = {"profile": profile, "run_dir": str(run_dir), "status": "running", "started": now(), "notebooks": {},
              "machine": machine_record(), "earlier_runs": earlier}
    write_json(record_path, record)
    total_start = time.time()
    for number, notebook in enumerate(notebooks, start=1):
        print(f"[{number}/{len(notebooks)}] {notebook.name} ...", file=out, flush=True)
        start = time.time()
        output = run_dir / "notebooks" / notebook.name
        try:
            execute_notebook(notebook, output, {"PROFILE": profile, "RUN_DIR": str(run_dir)}, notebook.parent)
        except NotebookFailed as err:
            record["notebooks"][notebook.name] = {"status": "failed", "seconds": round(time.time() - start, 1)}
            record.update(status="failed", error=str(err))
            write_json(record_path, record)
            raise
        seconds = time.time() - start
        record["notebooks"][notebook.name] = {"status": "finished", "seconds": round(seconds, 1)}
        write_json(record_path, record)
        print(f"    done in {seconds / 60:.1f} min -> {output}", file=out, flush=True)
    record.update(status="finished", finished=now(), seconds=round(time.time() - total_start, 1))
    write_json(record_path, record)
    record["report"] = write_report(run_dir)
    write_json(record_path, record)
    print(f"Workbook finished in {record['seconds'] / 60:.1f} min: {run_dir}\n"
          f"Report: {record['report']['html']} and {record['report']['markdown']}", file=out, flush=True)
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers.runner", description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="cpu", choices=PROFILES)
    parser.add_argument("--run-dir", default=None, help="default: runs/<profile>")
    parser.add_argument("--rerun", action="store_true", help="execute again in a folder whose run finished")
    args = parser.parse_args(argv)
    run_dir = default_run_dir(args.profile, args.run_dir)
    try:
        run_workbook(args.profile, run_dir, rerun=args.rerun)
    except (NotebookFailed, FileExistsError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

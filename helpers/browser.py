"""Chromium in the workbook: static images of the plots, and a check that executed notebooks render in a browser.

Static images. In a kernel, plotly shows a figure as its own MIME type, which JupyterLab
draws interactively but static viewers (GitHub, nbviewer, nbconvert's HTML) do not show.
Under the renderer ``plotly_mimetype+png`` every figure also carries a PNG, which kaleido
exports with a Chromium. ``static_export_available()`` says whether that works here; the
runner then sets ``PLOTLY_RENDERER`` for the kernels it starts.

The browser check opens executed notebooks as a reader does, and looks at them:

    python -m helpers.browser runs/tiny                   # every notebook of the run
    python -m helpers.browser runs/tiny 04_ppo.ipynb

1. it trusts each notebook (``jupyter trust``), so nothing of it is withheld as untrusted;
2. starts JupyterLab headless on loopback (a free port, a random token, rooted at the run
   folder, with its own settings: every cell attached, no news pop-up);
3. opens ``/lab/tree/notebooks/<name>`` (alone) in headless Chromium (Debian's ``chromium``;
   Playwright drives it and downloads no browser of its own);
4. waits until as many interactive plotly figures are drawn as the .ipynb holds plotly
   outputs, or the timeout passes. JupyterLab's plotly renderer shows an output's PNG, when
   it has one, until the pointer enters it; the check moves the pointer into each figure;
5. saves a screenshot of the whole notebook to ``<run_dir>/screenshots/<stem>.png``;
and always shuts the browser and JupyterLab down. It exits 1 when a figure did not render.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import warnings
from dataclasses import dataclass
from pathlib import Path

PLOTLY_MIME = "application/vnd.plotly.v1+json"
STATIC_RENDERER = "plotly_mimetype+png"

#: Chromium flags that work on a closed, screenless machine (no GPU, no calls home).
CHROMIUM_ARGS = ["--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]

#: JupyterLab user settings for the check: every cell in the page (so off-screen figures draw), no news toast.
LAB_SETTINGS = {
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false",
                                                                        "checkForUpdates": False},
}

# A plotly output is a ``.jp-RenderedPlotly``: first its PNG (``img.plot-img``), if it has one; on 'mouseenter'
# the interactive figure (plotly's ``.main-svg``). These count both, and move the pointer in.
_COUNT_FIGURES = """() => {
    const outputs = [...document.querySelectorAll('.jp-RenderedPlotly')];
    return {
        images: outputs.filter(e => [...e.querySelectorAll('img.plot-img')].some(i => i.naturalWidth > 0)).length,
        rendered: outputs.filter(e => e.querySelector('.main-svg')).length,
    };
}"""
_ENTER_FIGURES = """() => document.querySelectorAll('.jp-RenderedPlotly img.plot-img').forEach(
    i => i.dispatchEvent(new MouseEvent('mouseenter')))"""
# The height of the open notebook's content, to size the page for a screenshot of all of it.
_NOTEBOOK_HEIGHT = """() => {
    const outer = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-WindowedPanel-outer');
    return outer ? outer.getBoundingClientRect().top + outer.scrollHeight : document.body.scrollHeight;
}"""


def find_chromium() -> str | None:
    """The Chromium kaleido would use (``BROWSER_PATH``, then ``chromium``, Chrome, ... on the PATH), or None."""
    from choreographer.browsers.chromium import Chromium  # lazy: comes with kaleido, which is optional here

    path = Chromium.find_browser(skip_local=False)
    return path if path and os.access(path, os.X_OK) else None


def static_export_available() -> tuple[bool, str]:
    """Whether plotly can export PNGs here (kaleido installed and a Chromium found), and why not."""
    try:
        import kaleido  # noqa: F401  # lazy: optional; this checks whether it is installed
    except ImportError:
        return False, "kaleido is not installed (pip install kaleido)"
    if find_chromium() is None:
        return False, "no Chromium for kaleido (apt-get install chromium, or set BROWSER_PATH)"
    return True, "kaleido and Chromium found"


PNG_ATTEMPTS = 3  # kaleido's Chromium can lose a race under heavy load ("kaleido_scopes is not defined")


def tolerate_png_failures() -> None:
    """Make the PNG of ``STATIC_RENDERER`` best effort in this process: each export is tried
    ``PNG_ATTEMPTS`` times, and a figure whose PNG still fails is shown without one, with a
    warning, instead of failing its cell and the run (the interactive figure is what matters;
    ``helpers/__init__.py`` calls this in kernels the runner started)."""
    import plotly.io as pio  # lazy: plotly takes a second to import; only kernels that draw need it
    from plotly.io._base_renderers import PngRenderer  # lazy: as plotly.io above

    class BestEffortPng(PngRenderer):
        def to_mimebundle(self, fig_dict):
            for attempt in range(1, PNG_ATTEMPTS + 1):
                try:
                    return super().to_mimebundle(fig_dict)
                except Exception as err:  # kaleido raises its own errors, and JavaScript ones from Chromium
                    failure = f"{type(err).__name__}: {str(err)[:200]}"
                    if attempt < PNG_ATTEMPTS:
                        time.sleep(attempt)
            warnings.warn(f"No static PNG for this figure after {PNG_ATTEMPTS} tries ({failure}); "
                          "the interactive figure is unaffected.", RuntimeWarning, stacklevel=2)
            return {}

    current = pio.renderers["png"]
    if type(current) is not PngRenderer:
        return  # best effort already, or a renderer someone registered
    pio.renderers["png"] = BestEffortPng(width=current.width, height=current.height, scale=current.scale)
    pio.renderers.default = pio.renderers.default  # rebuild the active renderers with the new "png"


def plotly_outputs(notebook: Path) -> list[dict]:
    """The outputs of a saved notebook that are plotly figures."""
    cells = json.loads(notebook.read_text())["cells"]
    return [output for cell in cells for output in cell.get("outputs", []) if PLOTLY_MIME in output.get("data", {})]


@dataclass
class Rendered:
    """What the browser showed of one notebook."""

    notebook: str
    expected: int  # plotly outputs in the .ipynb
    rendered: int  # interactive plotly figures drawn in the page
    images: int  # static images (the outputs' PNGs) shown in the page before the pointer entered them
    screenshot: Path
    seconds: float

    @property
    def ok(self) -> bool:
        return self.rendered >= self.expected


def _venv_command(name: str) -> str:
    """A console script of the running Python's environment (``.venv/bin/jupyter``)."""
    path = Path(sys.executable).parent / name
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing; install the workbook (make setup)")
    return str(path)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def jupyter_lab(root: Path, timeout_s: float = 60.0):
    """JupyterLab serving ``root`` on loopback; yields its base URL and token, and stops it afterwards."""
    port, token = _free_port(), secrets.token_hex(16)
    with tempfile.TemporaryDirectory(prefix="lab-") as home:
        settings = Path(home) / "settings"
        for name, values in LAB_SETTINGS.items():
            (settings / name).parent.mkdir(parents=True, exist_ok=True)
            (settings / name).write_text(json.dumps(values))
        log = open(Path(home) / "lab.log", "w+")
        lab = subprocess.Popen(
            [_venv_command("jupyter"), "lab", "--no-browser", "--allow-root", "--ip=127.0.0.1", f"--port={port}",
             f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
             f"--LabApp.user_settings_dir={settings}", f"--LabApp.workspaces_dir={home}/workspaces"],
            stdout=log, stderr=subprocess.STDOUT,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + timeout_s
            while True:
                try:
                    urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2).close()
                    break
                except (urllib.error.URLError, ConnectionError):
                    if lab.poll() is not None or time.monotonic() > deadline:
                        log.seek(0)
                        raise RuntimeError(f"JupyterLab did not start on {url}:\n{log.read()[-2000:]}") from None
                    time.sleep(0.5)
            yield url, token
        finally:
            lab.terminate()
            try:
                lab.wait(timeout=15)
            except subprocess.TimeoutExpired:
                lab.kill()
                lab.wait()
            log.close()


def check_notebooks(run_dir: Path, names: list[str] | None = None, timeout_s: float = 180.0) -> list[Rendered]:
    """Open executed notebooks of ``run_dir`` in headless Chromium via JupyterLab; screenshot each one.

    ``names`` are file names in ``<run_dir>/notebooks/`` (default: all). Raises RuntimeError naming what is
    missing (Chromium, Playwright, the notebooks).
    """
    run_dir = run_dir.resolve()
    chromium = find_chromium()
    if chromium is None:
        raise RuntimeError("no Chromium found: apt-get install chromium (make setup does), or set BROWSER_PATH")
    try:
        from playwright.sync_api import sync_playwright  # lazy: optional (the test extra); checked here
    except ImportError:
        raise RuntimeError("Playwright is not installed: pip install -e '.[test]'") from None
    notebooks = [run_dir / "notebooks" / name for name in names] if names else sorted(
        (run_dir / "notebooks").glob("*.ipynb"))
    missing = [str(path) for path in notebooks if not path.exists()]
    if missing or not notebooks:
        raise RuntimeError(f"no executed notebook to open: {', '.join(missing) or run_dir / 'notebooks'}")
    subprocess.run([_venv_command("jupyter"), "trust", *map(str, notebooks)], check=True, capture_output=True)
    (run_dir / "screenshots").mkdir(exist_ok=True)

    with jupyter_lab(run_dir) as (url, token), sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            # ?reset: a blank workspace, so that only this notebook is open (not those opened before it).
            return [_open_notebook(browser, f"{url}/lab/tree/notebooks/{path.name}?reset&token={token}", path, timeout_s)
                    for path in notebooks]
        finally:
            browser.close()


def _open_notebook(browser, url: str, notebook: Path, timeout_s: float) -> Rendered:
    """Open one notebook's page, wait for its figures, screenshot the whole notebook."""
    from playwright.sync_api import Error as PlaywrightError  # lazy: optional (the test extra)

    start = time.monotonic()
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    try:
        page.goto(url)
        page.wait_for_selector(".jp-NotebookPanel .jp-Cell", timeout=timeout_s * 1000)
        expected, counts = len(plotly_outputs(notebook)), {"images": 0, "rendered": 0}
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            counts = page.evaluate(_COUNT_FIGURES)
            if counts["rendered"] >= expected:
                break
            page.evaluate(_ENTER_FIGURES)
            page.wait_for_timeout(500)
        page.set_viewport_size({"width": 1280, "height": min(int(page.evaluate(_NOTEBOOK_HEIGHT)) + 40, 16000)})
        page.wait_for_timeout(1000)  # let the figures redraw at the new size
        screenshot = notebook.parent.parent / "screenshots" / f"{notebook.stem}.png"
        page.screenshot(path=str(screenshot), full_page=True)
    except PlaywrightError as err:
        raise RuntimeError(f"{notebook.name} in Chromium: {err.message}") from None
    finally:
        page.close()
    return Rendered(notebook.name, expected, counts["rendered"], counts["images"], screenshot,
                    round(time.monotonic() - start, 1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers.browser",
                                     description="Open a run's executed notebooks in headless Chromium and check that the plotly figures render.")
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("notebooks", nargs="*", help="file names in RUN_DIR/notebooks (default: all)")
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for one notebook's figures")
    args = parser.parse_args(argv)
    try:
        results = check_notebooks(args.run_dir, args.notebooks, args.timeout)
    except (RuntimeError, subprocess.CalledProcessError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    for r in results:
        print(f"{'ok  ' if r.ok else 'FAIL'} {r.notebook}: {r.rendered}/{r.expected} plotly figures rendered "
              f"({r.images} showed their PNG first) in {r.seconds:.0f} s; screenshot {r.screenshot}")
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())

"""Static images beside the interactive plots, and the executed notebooks opened in a real browser (Chromium)."""

from __future__ import annotations

import base64
import importlib.util
import os
import sys

import plotly.io as pio
import pytest

from helpers import browser
from helpers.runner import execute_notebook, kernel_environment

from .test_runner import _notebook

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
STATIC_EXPORT, NO_STATIC_EXPORT = browser.static_export_available()


def _browser_missing() -> str | None:
    if browser.find_chromium() is None:
        return "no Chromium: apt-get install chromium (make setup does)"
    if importlib.util.find_spec("playwright") is None:
        return "Playwright is not installed: pip install -e '.[test]'"
    return None


BROWSER_MISSING = _browser_missing()


def _assert_pngs_beside(outputs: list[dict], where: str) -> None:
    for output in outputs:
        assert "image/png" in output["data"], f"{where}: a plotly output without a PNG"
        assert base64.b64decode(output["data"]["image/png"]).startswith(PNG_SIGNATURE), where


def test_static_export_needs_kaleido_and_chromium(monkeypatch):
    monkeypatch.delenv("PLOTLY_RENDERER", raising=False)
    monkeypatch.setattr(browser, "find_chromium", lambda: None)
    available, reason = browser.static_export_available()
    assert not available and "chromium" in reason
    assert kernel_environment() == {"RLHF_HEADLESS": "1"}

    monkeypatch.setattr(browser, "find_chromium", lambda: "/usr/bin/chromium")
    assert browser.static_export_available()[0]
    assert kernel_environment() == {"RLHF_HEADLESS": "1", "PLOTLY_RENDERER": "plotly_mimetype+png"}
    monkeypatch.setenv("PLOTLY_RENDERER", "notebook")  # a renderer the user chose is kept
    assert "PLOTLY_RENDERER" not in kernel_environment()

    monkeypatch.setitem(sys.modules, "kaleido", None)  # as if not installed
    assert browser.static_export_available() == (False, "kaleido is not installed (pip install kaleido)")


@pytest.fixture
def sent(monkeypatch) -> list[set]:
    """The MIME types of each bundle a LiveFigure displays or updates, under a renderer that asks for two.

    "+json" stands in for "+png": a second, non-interactive MIME type, with no Chromium needed.
    """
    bundles = []

    class Handle:
        def update(self, bundle, raw):
            bundles.append(set(bundle))

    monkeypatch.setattr("IPython.display.display", lambda bundle, raw, display_id: bundles.append(set(bundle)) or Handle())
    monkeypatch.setattr(pio.renderers, "default", "plotly_mimetype+json")
    return bundles


INTERACTIVE, FULL = {browser.PLOTLY_MIME}, {browser.PLOTLY_MIME, "application/json"}


def test_live_figure_sends_static_images_only_when_forced(sent):
    from helpers.plots import LiveFigure, append_point, line_figure

    live = LiveFigure(line_figure("loss", ["train"]), every_s=0.0)
    for step in range(3):
        append_point(live.figure, "train", step, 1.0 / (step + 1))
        live.refresh()
    live.refresh(force=True)
    assert sent == [INTERACTIVE] * 4 + [FULL]


def test_loss_plot_ends_with_the_static_image_after_a_final_evaluate(sent):
    from types import SimpleNamespace

    from helpers.plots import LossPlotCallback

    callback, state = LossPlotCallback(every_s=0.0), SimpleNamespace(global_step=0)
    callback.on_train_begin(None, state, None)
    for state.global_step in (1, 2):
        callback.on_log(None, state, None, logs={"loss": 1.0 / state.global_step})
    callback.on_train_end(None, state, None)
    callback.on_log(None, state, None, logs={"eval_loss": 0.7})  # trainer.evaluate() after training
    assert sent == [INTERACTIVE] * 3 + [FULL, FULL]
    assert callback.live.figure.data[1].y == (0.7,)


@pytest.mark.notebook
@pytest.mark.skipif(not STATIC_EXPORT, reason=f"no static export: {NO_STATIC_EXPORT}")
def test_runner_keeps_a_png_beside_each_plotly_figure(tmp_path, monkeypatch):
    monkeypatch.delenv("PLOTLY_RENDERER", raising=False)
    notebook = _notebook(
        tmp_path / "figures.ipynb",
        "import plotly.graph_objects as go\ngo.Figure(go.Bar(x=['a', 'b'], y=[2, 1])).show()",
        "from helpers.plots import LiveFigure, append_point, line_figure\n"
        "live = LiveFigure(line_figure('loss', ['train']), every_s=0.0)\n"
        "for step in range(3):\n    append_point(live.figure, 'train', step, 1 / (step + 1))\n    live.refresh()\n"
        "live.refresh(force=True)",
    )
    executed = tmp_path / "run" / "notebooks" / notebook.name
    execute_notebook(notebook, executed, {}, tmp_path)
    outputs = browser.plotly_outputs(executed)
    assert len(outputs) == 2  # the bar chart, and the live figure updated in place
    _assert_pngs_beside(outputs, notebook.name)
    assert "PLOTLY_RENDERER" not in os.environ  # restored after the run


@pytest.mark.notebook
@pytest.mark.skipif(not STATIC_EXPORT, reason=f"no static export: {NO_STATIC_EXPORT}")
def test_workbook_figures_carry_a_png_for_static_viewers(tiny_run):
    notebooks = sorted((tiny_run / "notebooks").glob("*.ipynb"))
    assert any(browser.plotly_outputs(path) for path in notebooks)
    for path in notebooks:
        _assert_pngs_beside(browser.plotly_outputs(path), path.name)


@pytest.mark.notebook
@pytest.mark.skipif(BROWSER_MISSING is not None, reason=str(BROWSER_MISSING))
def test_ppo_notebook_renders_in_chromium(tiny_run):
    [result] = browser.check_notebooks(tiny_run, ["04_ppo.ipynb"])
    assert result.expected >= 2, "the live PPO dashboard and the bar charts"
    assert result.rendered == result.expected, f"{result.rendered} of {result.expected} plotly figures rendered"
    if STATIC_EXPORT:
        assert result.images == result.expected, "the PNGs beside the figures show too"
    assert result.screenshot == tiny_run / "screenshots" / "04_ppo.png"
    assert result.screenshot.read_bytes().startswith(PNG_SIGNATURE) and result.screenshot.stat().st_size > 10_000


def test_a_failing_png_export_is_retried_then_left_out_with_a_warning(monkeypatch):
    from plotly.io import _base_renderers

    attempts = []

    def fails_once(fig, **kwargs):
        attempts.append(1)
        if len(attempts) == 1:
            raise RuntimeError("ReferenceError: kaleido_scopes is not defined")  # seen under heavy load
        return b"\x89PNG fake"

    def always_fails(fig, **kwargs):
        raise RuntimeError("down")

    original, default = pio.renderers["png"], pio.renderers.default
    monkeypatch.setattr(browser.time, "sleep", lambda seconds: None)
    try:
        browser.tolerate_png_failures()
        renderer = pio.renderers["png"]
        assert type(renderer).__name__ == "BestEffortPng"
        browser.tolerate_png_failures()  # a second call changes nothing
        assert pio.renderers["png"] is renderer
        monkeypatch.setattr(_base_renderers, "to_image", fails_once)
        assert renderer.to_mimebundle({"data": []}) == {"image/png": base64.b64encode(b"\x89PNG fake").decode()}
        assert len(attempts) == 2, "the first failure is retried"
        monkeypatch.setattr(_base_renderers, "to_image", always_fails)
        with pytest.warns(RuntimeWarning, match=f"after {browser.PNG_ATTEMPTS} tries .*RuntimeError: down"):
            assert renderer.to_mimebundle({"data": []}) == {}
    finally:
        pio.renderers["png"] = original
        pio.renderers.default = default

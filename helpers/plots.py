"""Plots that update in place while a model trains.

A plotly figure is displayed once with a display id, then re-sent with
``handle.update`` as new points arrive (``display(fig)`` followed by ``update(fig)``
would append a new output each time instead). Updates are throttled so a fast loop
does not flood the notebook; the final state is always sent. Headless runs
(papermill) keep the last update in the saved notebook.
"""

from __future__ import annotations

import time

import plotly.graph_objects as go
from transformers import TrainerCallback


class LiveFigure:
    """A plotly figure shown once and redrawn in place at most every ``every_s`` seconds."""

    def __init__(self, figure: go.Figure, every_s: float = 5.0):
        from IPython.display import display

        self.figure = figure
        self.every_s = every_s
        self._last = 0.0
        self._handle = display(figure._repr_mimebundle_(), raw=True, display_id=True)

    def refresh(self, force: bool = False) -> None:
        if self._handle is None or (not force and time.monotonic() - self._last < self.every_s):
            return
        self._handle.update(self.figure._repr_mimebundle_(), raw=True)
        self._last = time.monotonic()


def line_figure(title: str, series: list[str], xaxis: str = "step", yaxis: str = "") -> go.Figure:
    """An empty figure with one named line per series, ready for ``append_point``."""
    figure = go.Figure(layout={"title": title, "xaxis_title": xaxis, "yaxis_title": yaxis, "template": "plotly_white"})
    for name in series:
        figure.add_trace(go.Scatter(x=[], y=[], mode="lines+markers", name=name))
    return figure


def append_point(figure: go.Figure, series: str, x: float, y: float) -> None:
    trace = next(t for t in figure.data if t.name == series)
    trace.x = tuple(trace.x) + (x,)
    trace.y = tuple(trace.y) + (y,)


class LossPlotCallback(TrainerCallback):
    """Draws the trainer's train and eval loss live in the notebook."""

    def __init__(self, title: str = "loss", every_s: float = 5.0):
        self.title, self.every_s, self.live = title, every_s, None

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.live is None:
            self.live = LiveFigure(line_figure(self.title, ["train", "eval"], yaxis="cross-entropy"), self.every_s)
        for key, series in (("loss", "train"), ("eval_loss", "eval")):
            if key in (logs or {}):
                append_point(self.live.figure, series, state.global_step, logs[key])
        self.live.refresh()

    def on_train_end(self, args, state, control, **kwargs):
        if self.live is not None:
            self.live.refresh(force=True)

"""Plots that update in place while a model trains.

A plotly figure is displayed once with a display id, then re-sent with
``handle.update`` as new points arrive (``display(fig)`` followed by ``update(fig)``
would append a new output each time instead). Updates are throttled so a fast loop
does not flood the notebook; the final state is always sent. Headless runs
(papermill) keep the last update in the saved notebook. When the renderer asks for
a static image too (the runner sets ``PLOTLY_RENDERER=plotly_mimetype+png``), only
the final, forced update carries it: a PNG takes a second or more on a CPU.
"""

from __future__ import annotations

import time

import IPython.display
import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio
from plotly.subplots import make_subplots
from transformers import TrainerCallback


class LiveFigure:
    """A plotly figure shown once and redrawn in place at most every ``every_s`` seconds.

    Intermediate redraws send only the interactive figure; ``refresh(force=True)``, the final one,
    sends everything the renderer asks for (a PNG for static viewers under ``plotly_mimetype+png``).
    """

    def __init__(self, figure: go.Figure, every_s: float = 5.0):
        self.figure = figure
        self.every_s = every_s
        self._last = 0.0
        self._handle = IPython.display.display(self._interactive(), raw=True, display_id=True)  # tests patch it

    def _interactive(self) -> dict:
        """The figure as plotly's own MIME type only (no static image to render)."""
        return pio.renderers["plotly_mimetype"].to_mimebundle(self.figure.to_dict())

    def refresh(self, force: bool = False) -> None:
        if self._handle is None or (not force and time.monotonic() - self._last < self.every_s):
            return
        self._handle.update(self.figure._repr_mimebundle_() if force else self._interactive(), raw=True)
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
        self.title, self.every_s, self.live, self.trained = title, every_s, None, False

    def on_train_begin(self, args, state, control, **kwargs):
        self.trained = False

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.live is None:
            self.live = LiveFigure(line_figure(self.title, ["train", "eval"], yaxis="cross-entropy"), self.every_s)
        for key, series in (("loss", "train"), ("eval_loss", "eval")):
            if key in (logs or {}):
                append_point(self.live.figure, series, state.global_step, logs[key])
        self.live.refresh(force=self.trained)  # a log after training (``trainer.evaluate()``) is the final state

    def on_train_end(self, args, state, control, **kwargs):
        self.trained = True
        if self.live is not None:
            self.live.refresh(force=True)


#: The PPO dashboard: (panel title, metric keys of the PPO log drawn in it).
PPO_PANELS = (
    ("score: PPO's reward vs gold", ("rm_score", "score", "gold")),
    ("KL to the SFT model (nats)", ("kl",)),
    ("beta (KL coefficient)", ("kl_coef",)),
    ("entropy (nats / token)", ("entropy",)),
    ("response length (tokens)", ("response_length",)),
    ("EOS rate", ("eos_rate",)),
    ("losses", ("policy_loss", "value_loss")),
    ("clip fractions, approx KL", ("clipfrac", "value_clipfrac", "approx_kl")),
    ("value: explained variance", ("explained_variance",)),
)


def ppo_dashboard(title: str = "PPO (live)") -> go.Figure:
    """A 3 x 3 grid with one panel per group of PPO metrics; traces named after the log's keys."""
    figure = make_subplots(rows=3, cols=3, subplot_titles=[panel for panel, _ in PPO_PANELS],
                           horizontal_spacing=0.07, vertical_spacing=0.12)
    for index, (_, keys) in enumerate(PPO_PANELS):
        for key in keys:
            figure.add_trace(go.Scatter(x=[], y=[], mode="lines+markers", name=key, legendgroup=key),
                             row=index // 3 + 1, col=index % 3 + 1)
    figure.update_layout(title=title, template="plotly_white", height=780, xaxis7_title="iteration",
                         xaxis8_title="iteration", xaxis9_title="iteration")
    return figure


def add_ppo_metrics(figure: go.Figure, row: dict) -> None:
    """Append one PPO log row to every trace of a ``ppo_dashboard`` figure (missing or None values skipped)."""
    for trace in figure.data:
        value = row.get(trace.name)
        if value is not None:
            append_point(figure, trace.name, row["iteration"], value)


def rolling(values: list[float], window: int) -> list[float]:
    """Trailing mean over the last ``window`` values (fewer at the start): a curve that one noisy batch cannot bend."""
    out = []
    for end in range(1, len(values) + 1):
        piece = values[max(0, end - window):end]
        out.append(sum(piece) / len(piece))
    return out


def learning_curve(metrics: list[dict], window: int = 4) -> dict:
    """Rolling means of PPO's reward (``rm_score``: the reward model's normalised score, less its taste in
    length when ``length_neutral_reward`` is on) and of gold over the PPO iterations, and where gold peaked.

    -> ``{"iteration", "reward", "gold"}`` (lists), ``gold_peak`` (the iteration with the highest rolling gold)
    and ``gold_gain`` (the last rolling gold minus the first). Reward and gold rising together is the
    reward model doing its job; reward still rising after gold's peak is over-optimisation (Gao et al., 2022).
    """
    rows = [row for row in metrics if row.get("gold") is not None]
    if not rows:
        raise ValueError("learning_curve needs PPO metrics with a 'gold' value (generated data)")
    iterations = [row["iteration"] for row in rows]
    reward, gold = rolling([row["rm_score"] for row in rows], window), rolling([row["gold"] for row in rows], window)
    peak = max(range(len(gold)), key=gold.__getitem__)
    return {"iteration": iterations, "reward": reward, "gold": gold, "gold_peak": iterations[peak],
            "gold_gain": gold[-1] - gold[0]}


def learning_curve_figure(metrics: list[dict], window: int = 4) -> go.Figure:
    """PPO's reward (left axis) and gold (right axis), each a rolling mean, with gold's peak marked."""
    curve = learning_curve(metrics, window)
    figure = make_subplots(specs=[[{"secondary_y": True}]])
    figure.add_trace(go.Scatter(x=curve["iteration"], y=curve["reward"], name="reward (what PPO maximises)",
                                mode="lines+markers"), secondary_y=False)
    figure.add_trace(go.Scatter(x=curve["iteration"], y=curve["gold"], name="gold (labeler)", mode="lines+markers"),
                     secondary_y=True)
    figure.add_vline(x=curve["gold_peak"], line_dash="dot", annotation_text=f"gold peaks (iteration {curve['gold_peak']})")
    figure.update_layout(title=f"Is PPO learning? Reward and gold on the rollouts, rolling mean of {window} iterations",
                         template="plotly_white", xaxis_title="iteration", height=420)
    figure.update_yaxes(title_text="reward (normalised)", secondary_y=False)
    figure.update_yaxes(title_text="gold", secondary_y=True)
    return figure


class PPOMonitor:
    """What the user watches while PPO trains: the live dashboard, and a few current answers every N iterations.

    Pass it as ``train_ppo(..., on_iteration=monitor)``; ``monitor.replay(metrics)`` draws a resumed run's history.
    """

    def __init__(self, table_every: int = 4, n_answers: int = 3, every_s: float = 5.0):
        self.live = LiveFigure(ppo_dashboard(), every_s)
        self.table_every, self.n_answers = table_every, n_answers

    def replay(self, metrics: list[dict]) -> None:
        for row in metrics:
            add_ppo_metrics(self.live.figure, row)
        self.live.refresh(force=True)

    def __call__(self, row: dict, batch) -> None:
        add_ppo_metrics(self.live.figure, row)
        self.live.refresh()
        if self.table_every and row["iteration"] % self.table_every == 0:
            self.show_answers(row["iteration"], batch)

    def show_answers(self, iteration: int, batch) -> None:
        table = pd.DataFrame({
            "prompt": [r["messages"][-1]["content"] for r in batch.rows],
            "answer": batch.texts,
            "reward": batch.scores.tolist(),
            **({"gold": batch.gold} if batch.gold else {}),
        }).head(self.n_answers)
        print(f"Iteration {iteration}: a few of this batch's answers")
        IPython.display.display(table)

    def close(self) -> None:
        self.live.refresh(force=True)

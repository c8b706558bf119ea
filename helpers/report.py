"""The run report: one self-contained HTML page and a short Markdown summary of a run folder.

    python -m helpers.report runs/cpu        # -> runs/cpu/report.html, runs/cpu/report.md

The runner writes it after the last notebook. Everything comes from what the stages
saved (``run.json``, each stage's ``meta.json``, ``ppo/metrics.jsonl``), so the report
can be rebuilt at any time without a model. The HTML page carries plotly.js inline and
opens offline; the Markdown summary holds the tables, and static PNGs of the figures
(``report_files/``) when a Chromium is there to draw them.
"""

from __future__ import annotations

import argparse
import html
import sys
from pathlib import Path

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from . import runs
from .browser import static_export_available
from .files import read_json, read_jsonl, write_text

STAGES = tuple((name, spec.notebook) for name, spec in runs.STAGES.items())  # (folder, notebook), in order
HEADLINE_COLUMNS = ("prompts", "answers", "gold", "reward", "ci95_low", "ci95_high", "gain_vs_sft",
                    "gain_ci95_low", "gain_ci95_high", "win_rate_vs_sft", "win_ci95_low", "win_ci95_high", "kl",
                    "tokens", "eos_rate", "preference_accuracy")


def oracle_tries(run_dir: str | Path) -> list[dict]:
    """The finished PPO tries against the gold labeler itself (``benchmarks/ppo_sweep.py --reward gold``) in
    ``<run_dir>/ppo-sweep/``, by name: the ceiling the learned reward model is measured against."""
    tries = [read_json(path) for path in sorted(Path(run_dir).glob("ppo-sweep/*/result.json"))]
    return [result for result in tries if result.get("reward") == "gold"]


OLD_SWEEP_KEYS = {"PPO": {"gold": "gold", "gain_vs_sft": "gain_vs_SFT", "win_rate_vs_sft": "win_rate_vs_SFT",
                          "final_kl": "final_kl", "tokens": "mean_tokens", "reward": "mean_reward",
                          "labeler": "labeler", "pass_rates": "pass_rates"},
                  "SFT": {"gold": "sft_gold", "labeler": "sft_labeler", "pass_rates": "sft_pass_rates"}}
"""Where a PPO sweep result written before ``helpers.evaluation.ppo_vs_sft`` (up to commit 59edfea) kept each
of its fields, by contender: new key -> old key. Intervals were pairs (``ci95``, ``gain_ci95``, ``win_ci95``)
and ``cut_off`` the share without EOS."""


def sweep_eval(result: dict) -> dict[str, dict]:
    """A PPO sweep try's ``{"SFT": row, "PPO": row}`` in ``ppo_vs_sft``'s keys (gold, gain_vs_sft, ...).

    A try written by older code has flat keys instead (``gold``, ``sft_gold``, ``gain_vs_SFT``,
    ``gain_ci95: [low, high]``, ...); they are read into the same keys, so old run folders still render.
    """
    if "eval" in result:
        return result["eval"]
    rows = {name: {new: result[old] for new, old in keys.items() if old in result}
            for name, keys in OLD_SWEEP_KEYS.items()}
    for prefix, old in (("", "ci95"), ("gain_", "gain_ci95"), ("win_", "win_ci95")):
        if old in result:
            rows["PPO"][f"{prefix}ci95_low"], rows["PPO"][f"{prefix}ci95_high"] = result[old]
    if "cut_off" in result:
        rows["PPO"]["eos_rate"] = 1.0 - result["cut_off"]
    return rows


def oracle_table(tries: list[dict]) -> pd.DataFrame:
    """One line per oracle try (``oracle_tries``), by name: episodes, its gold score and SFT's, the gain and
    win rate against SFT with their paired 95 % intervals, and the KL to SFT at the end of training."""
    lines = {}
    for result in tries:
        evaluated = sweep_eval(result)
        ppo, sft = evaluated["PPO"], evaluated["SFT"]
        lines[result["name"]] = {"episodes": result["episodes"], "gold": ppo["gold"], "SFT gold": sft["gold"],
                                 **{key: ppo.get(key) for key in ("gain_vs_sft", "gain_ci95_low", "gain_ci95_high",
                                                                  "win_rate_vs_sft", "final_kl")}}
    return pd.DataFrame.from_dict(lines, orient="index")


def collect(run_dir: str | Path) -> dict:
    """What the report shows: the run record, each finished stage's meta, the PPO metric log, the oracle tries."""
    run_dir = Path(run_dir)
    if not (run_dir / "run.json").exists():
        raise FileNotFoundError(f"{run_dir / 'run.json'} not found: is {run_dir} a run folder (make run)?")
    metas = {name: read_json(run_dir / name / "meta.json") for name, _ in STAGES
             if (run_dir / name / "meta.json").exists()}
    metrics_file = run_dir / "ppo" / "metrics.jsonl"
    return {"run": read_json(run_dir / "run.json"), "metas": metas,
            "ppo_metrics": read_jsonl(metrics_file) if metrics_file.exists() else [], "oracle": oracle_tries(run_dir)}


def stage_table(info: dict) -> pd.DataFrame:
    """Per stage: notebook wall time in this run, peak resident memory of its kernel, when it finished."""
    notebooks = info["run"].get("notebooks", {})
    rows = []
    for name, notebook in STAGES:
        meta = info["metas"].get(name, {})
        memory = meta.get("memory", {})
        seconds, rss = notebooks.get(notebook, {}).get("seconds"), memory.get("peak_rss_mb")
        rows.append({"stage": name, "notebook": notebook,
                     "minutes": "" if seconds is None else f"{seconds / 60:.1f}",
                     "peak_rss_gb": "" if rss is None else f"{rss / 1024:.2f}",
                     "finished": meta.get("finished", "not run")})
    return pd.DataFrame(rows).set_index("stage")


def headline_table(info: dict) -> pd.DataFrame:
    """Notebook 06's headline table (contenders x measures), or an empty table before it ran."""
    headline = info["metas"].get("eval", {}).get("headline", {})
    table = pd.DataFrame(headline).T
    if not len(table):
        return table
    table = table[[c for c in HEADLINE_COLUMNS if c in table]].astype(float)
    for count in ("prompts", "answers"):
        if count in table:
            table[count] = table[count].astype("Int64")
    return table


def ppo_figure(metrics: list[dict]):
    """PPO's training curves: reward-model score and gold score of the rollouts, and KL to the SFT model."""
    log = pd.DataFrame(metrics)
    figure = make_subplots(rows=1, cols=2, subplot_titles=["score of the rollouts", "KL to the SFT model (nats)"])
    for column, name in (("rm_score", "reward (what PPO maximises)"), ("gold", "gold (labeler)")):
        if column in log and log[column].notna().any():
            figure.add_trace(go.Scatter(x=log["iteration"], y=log[column], mode="lines+markers", name=name), 1, 1)
    figure.add_trace(go.Scatter(x=log["iteration"], y=log["kl"], mode="lines+markers", name="KL"), 1, 2)
    figure.update_xaxes(title_text="PPO iteration")
    figure.update_layout(title="PPO training (notebook 04)", template="plotly_white", height=380)
    return figure


def figures(info: dict) -> list[tuple[str, object]]:
    """(name, plotly figure) pairs: PPO curves, the headline bars and the over-optimisation curve."""
    from .evaluation import overoptimisation_figure  # lazy: evaluation imports torch; report, runner stay torch-free

    found = []
    if info["ppo_metrics"]:
        found.append(("ppo_training", ppo_figure(info["ppo_metrics"])))
    eval_meta = info["metas"].get("eval")
    if eval_meta:
        measure = eval_meta["measure"]
        bars = headline_table(info).dropna(subset=[measure]).reset_index(names="contender")
        found.append(("headline", px.bar(bars, x="contender", y=measure, color="contender",
                                         error_y=bars["ci95_high"] - bars[measure],
                                         error_y_minus=bars[measure] - bars["ci95_low"],
                                         title=f"Mean {measure} score on held-out prompts (95 % interval)")))
        found.append(("overoptimisation", overoptimisation_figure(pd.DataFrame(eval_meta["curve"]))))
    return found


def _cell(value) -> str:
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return ""
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def markdown_table(table: pd.DataFrame) -> str:
    """A pipe table (no extra dependency), index included."""
    header = [table.index.name or ""] + [str(c) for c in table.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for index, row in table.iterrows():
        lines.append("| " + " | ".join([str(index)] + [_cell(v) for v in row.tolist()]) + " |")
    return "\n".join(lines)


def _interval(row, name: str, spec: str) -> str:
    """", 95 % CI low to high" from a headline row's ``<name>_ci95_low/high``, or "" where a run predates them."""
    low, high = row.get(f"{name}_ci95_low"), row.get(f"{name}_ci95_high")
    if low is None or high is None or pd.isna(low) or pd.isna(high):
        return ""
    return f", 95 % CI {format(low, spec)} to {format(high, spec)}"


def _mean_with_interval(row, measure: str) -> str:
    """"0.171 (0.129-0.216)" from a headline row, or the mean alone where the run has no interval."""
    low, high = row.get("ci95_low"), row.get("ci95_high")
    if low is None or high is None or pd.isna(low) or pd.isna(high):
        return f"{row[measure]:.3f}"
    return f"{row[measure]:.3f} ({low:.3f}-{high:.3f})"


def _oracle_lines(info: dict) -> list[str]:
    """One line per PPO try against the gold labeler itself: the ceiling for the learned reward model."""
    lines = []
    for result in info.get("oracle", []):
        evaluated = sweep_eval(result)  # a result of older code is read into the same keys
        ppo, sft = evaluated["PPO"], evaluated["SFT"]
        lines.append(f"- ceiling: PPO against the gold labeler itself (`ppo_sweep.py --reward gold`, try "
                     f"`{result['name']}`, {result['episodes']} episodes, one answer per prompt): gold "
                     f"{ppo['gold']:.3f} vs SFT {sft['gold']:.3f}, gain {ppo['gain_vs_sft']:+.3f} "
                     f"(95 % CI {ppo['gain_ci95_low']:+.3f} to {ppo['gain_ci95_high']:+.3f}), "
                     f"KL {ppo['final_kl']:.1f}")
    return lines


def _gflops(rates: dict, dtype: str) -> str:
    return f"{rates[dtype]:.0f}" if isinstance(rates.get(dtype), (int, float)) else "?"


def _summary_lines(info: dict) -> list[str]:
    run, metas = info["run"], info["metas"]
    data = metas.get("data", {})
    lines = [f"- profile: `{run.get('profile')}`; run folder: `{run.get('run_dir')}`; status: {run.get('status')}",
             f"- model: `{data.get('base_model', '?')}`; data source: `{data.get('source', '?')}`",
             f"- whole workbook: {run['seconds'] / 60:.1f} min" if run.get("seconds") else "- whole workbook: not finished"]
    machine = run.get("machine")
    if machine:
        rates = machine.get("matmul_gflops", {})
        lines.append(f"- machine: {machine.get('cpu_cores')} cores ({machine.get('torch_threads')} torch threads), "
                     f"native bfloat16: {'yes' if machine.get('fast_bfloat16') else 'no'}, matmul "
                     f"{_gflops(rates, 'float32')} GFLOP/s float32 and {_gflops(rates, 'bfloat16')} bfloat16"
                     + (f", GPU {machine['cuda']}" if machine.get("cuda") else ""))
    precision = data.get("precision")
    if precision:
        lines.append(f"- precision: {precision}")
    eval_meta = metas.get("eval")
    if eval_meta:
        table = headline_table(info)
        measure = eval_meta["measure"]
        if {"base", "SFT", "PPO (final)"} <= set(table.index):
            steps = [f"{name} {_mean_with_interval(table.loc[name], measure)}"
                     for name in ("base", "SFT", "PPO (final)")]
            lines.append(f"- the recipe, step by step ({measure}, 95 % CI): " + " → ".join(steps))
        if {"SFT", "PPO (final)"} <= set(table.index):
            ppo, sft = table.loc["PPO (final)"], table.loc["SFT"]
            gain = ppo.get("gain_vs_sft", ppo[measure] - sft[measure])  # runs before the paired columns lack it
            lines.append(f"- PPO (final) vs SFT: {measure} {ppo[measure]:.3f} vs {sft[measure]:.3f} "
                         f"({gain:+.3f}{_interval(ppo, 'gain', '+.3f')}); PPO wins "
                         f"{ppo['win_rate_vs_sft']:.0%} of comparisons{_interval(ppo, 'win', '.0%')}; "
                         f"KL to SFT {ppo['kl']:.2f} nats")
        lines += _oracle_lines(info)
        check = eval_meta.get("reward_model_check")
        if check:
            num = lambda key, spec=".2f": "n/a" if check.get(key) is None else format(check[key], spec)  # noqa: E731
            lines.append(f"- reward model on {check['answers']} fresh SFT answers ({check['prompts']} prompts): "
                         f"pairwise accuracy {num('pairwise_accuracy')} ({check['pairs']} pairs), Spearman "
                         f"{num('spearman')} pooled, {num('spearman_within_prompt')} within prompt; gold of its "
                         f"favourite {num('gold_top_reward', '.3f')} vs {num('gold_mean', '.3f')} at random and "
                         f"{num('gold_best', '.3f')} for the labeler's favourite")
        if measure == "reward":
            lines.append("- no gold judge on real data: contenders are compared by reward-model score")
    return lines


def render_markdown(info: dict, images: dict[str, str]) -> str:
    parts = ["# Run report", "", *_summary_lines(info), "", "## Stages", "", markdown_table(stage_table(info)), ""]
    table = headline_table(info)
    if len(table):
        parts += ["## Headline table (notebook 06)", "", markdown_table(table), ""]
    for name, path in images.items():
        parts += [f"![{name}]({path})", ""]
    parts += ["The interactive figures are in `report.html` (opens offline)."]
    return "\n".join(parts) + "\n"


def render_html(info: dict, figs: list[tuple[str, object]]) -> str:
    """One page: summary, tables, figures; plotly.js inlined once so it opens offline."""
    body = ["<h1>Run report</h1>", "<ul>"]
    body += [f"<li>{html.escape(line[2:])}</li>" for line in _summary_lines(info)]
    body += ["</ul>", "<h2>Stages</h2>", stage_table(info).to_html(na_rep="", float_format=_cell)]
    table = headline_table(info)
    if len(table):
        body += ["<h2>Headline table (notebook 06)</h2>", table.to_html(na_rep="", float_format=_cell)]
    for index, (_, figure) in enumerate(figs):
        body.append(figure.to_html(full_html=False, include_plotlyjs=index == 0))
    style = ("body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
             "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>Run report</title><style>{style}</style>"
            f"</head><body>{''.join(body)}</body></html>")


def write_report(run_dir: str | Path, static_images: bool | None = None) -> dict[str, str]:
    """Write ``report.html``, ``report.md`` (and ``report_files/*.png`` when possible); returns their paths."""
    run_dir = Path(run_dir)
    info = collect(run_dir)
    figs = figures(info)
    if static_images is None:
        static_images = static_export_available()[0]
    images = {}
    if static_images:
        (run_dir / "report_files").mkdir(exist_ok=True)
        for name, figure in figs:
            path = run_dir / "report_files" / f"{name}.png"
            figure.write_image(str(path), width=1000, height=420)
            images[name] = f"report_files/{name}.png"
    write_text(run_dir / "report.html", render_html(info, figs))
    write_text(run_dir / "report.md", render_markdown(info, images))
    return {"html": str(run_dir / "report.html"), "markdown": str(run_dir / "report.md"), **images}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", help="a run folder, e.g. runs/cpu")
    parser.add_argument("--no-images", action="store_true", help="skip the static PNGs")
    args = parser.parse_args(argv)
    try:
        written = write_report(args.run_dir, static_images=False if args.no_images else None)
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print("\n".join(f"{k}: {v}" for k, v in written.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

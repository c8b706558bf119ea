"""Notebook tier: the workbook executed end to end on the tiny profile, with assertions on what it shows."""

from __future__ import annotations

import json
import subprocess

import nbformat
import pytest

from helpers.files import read_json, read_jsonl, sha256
from helpers.stats import within_prompt_agreement, within_prompt_spearman
from helpers.runner import workbook_notebooks

from .conftest import REPO_ROOT


def _tracked_notebooks():
    out = subprocess.run(["git", "ls-files", "*.ipynb"], cwd=REPO_ROOT, capture_output=True, text=True).stdout.split()
    return [REPO_ROOT / name for name in out] or workbook_notebooks()


def test_committed_notebooks_carry_no_outputs():
    for path in _tracked_notebooks():
        nb = json.loads(path.read_text())
        for index, cell in enumerate(nb["cells"]):
            if cell["cell_type"] == "code":
                assert not cell["outputs"] and cell["execution_count"] is None, f"{path.name} cell {index} has outputs"


def test_first_code_cell_is_the_parameters_cell():
    for path in workbook_notebooks():
        nb = nbformat.read(path, as_version=4)
        first = next(c for c in nb.cells if c.cell_type == "code")
        assert "parameters" in first.metadata.get("tags", []), path.name
        assert "PROFILE" in first.source and "RUN_DIR" in first.source and "RLHF_PROFILE" in first.source


def _outputs(path):
    """All text a notebook displayed, and the MIME types of its rich outputs."""
    nb = nbformat.read(path, as_version=4)
    texts, mimes = [], []
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            assert output["output_type"] != "error", f"{path.name}: {output.get('ename')}: {output.get('evalue')}"
            texts.append(output.get("text", "") + output.get("data", {}).get("text/plain", ""))
            mimes += list(output.get("data", {}))
    return "\n".join(texts), mimes


@pytest.mark.notebook
def test_workbook_runs_on_tiny(tiny_run):
    record = read_json(tiny_run / "run.json")
    assert record["status"] == "finished"
    assert set(record["notebooks"]) == {p.name for p in workbook_notebooks()}


@pytest.mark.notebook
def test_notebook_01_builds_the_dataset(tiny_run):
    from helpers.config import DataConfig
    from helpers.dataset import SPLITS, load_split

    cfg = DataConfig.from_profile("tiny")
    data = tiny_run / "data"
    meta = read_json(data / "meta.json")
    assert meta["counts"] == cfg.split_sizes
    assert meta["config"]["data"] == json.loads(json.dumps(cfg.to_dict()))  # as stored: tuples become lists
    assert meta["versions"]["transformers"] and meta["base_model"] == "embedded:SmolLM2-135M-Instruct"
    rows = {split: load_split(data, split) for split in SPLITS}
    eval_topics = {r["topic"] for r in rows["eval"]}
    assert not eval_topics & {r["topic"] for s in ("sft", "rm", "ppo") for r in rows[s]}
    # tiny keeps each prompt's best candidate (threshold 0): one demonstration per SFT prompt.
    assert meta["demonstrations"]["kept"] == cfg.n_sft
    demos = [json.loads(line) for line in (data / "demonstrations.jsonl").read_text().splitlines()]
    assert len(demos) == cfg.n_sft and all(d["response"].strip() for d in demos)
    base = meta["base_eval"]
    assert 0.0 <= base["ci95_low"] <= base["gold"] <= base["ci95_high"] <= 1.0  # helpers.evaluation.judged_row
    assert set(base["pass_rates"]) <= {c["kind"] for r in rows["eval"] for c in r["constraints"]}
    for name, entry in meta["files"].items():
        assert sha256(data / name) == entry["sha256"], f"{name} changed after meta.json was written"

    text, mimes = _outputs(tiny_run / "notebooks" / "01_instruction_data.ipynb")
    assert f"mean gold score on {cfg.n_eval} evaluation prompts: {base['gold']:.3f}" in text
    assert meta["demonstrations"]["edited"] == 0 and not cfg.edit_demonstrations  # tiny: sampled answers only
    assert f"Kept {cfg.n_sft} demonstrations (0 of them edited) for {cfg.n_sft} of {cfg.n_sft} SFT prompts" in text
    assert "prompts with a demonstration" in text  # the table per constraint kind
    assert mimes.count("application/vnd.plotly.v1+json") >= 2  # pass-rate bars, best-of-N histogram


@pytest.mark.notebook
def test_notebook_02_fine_tunes_and_compares_with_the_base_model(tiny_run):
    from helpers.config import DataConfig

    n_eval = DataConfig.from_profile("tiny").n_eval
    sft = tiny_run / "sft"
    meta = read_json(sft / "meta.json")
    assert meta["demonstrations"] == DataConfig.from_profile("tiny").n_sft
    train = meta["train"]
    assert train["steps"] >= 1 and train["train_examples"] + train["eval_examples"] == meta["demonstrations"]
    assert (sft / "adapter" / "adapter_model.safetensors").exists() and (sft / "adapter" / "adapter_config.json").exists()
    for name in ("base", "SFT"):
        row = meta["eval"][name]
        assert 0.0 <= row["ci95_low"] <= row["gold"] <= row["ci95_high"] <= 1.0
    samples = [json.loads(line) for line in (sft / "sft_eval_samples.jsonl").read_text().splitlines()]
    assert len(samples) == n_eval
    assert meta["eval"]["SFT"]["gold"] == pytest.approx(sum(r["samples"][0]["score"] for r in samples) / n_eval)
    assert -1.0 <= meta["eval"]["SFT"]["gain_vs_base"] <= 1.0 and "gain_vs_base" not in meta["eval"]["base"]

    text, mimes = _outputs(tiny_run / "notebooks" / "02_supervised_finetuning.ipynb")
    assert "Trained on:" in text and "Ignored:" in text  # the loss mask, shown on one example
    assert mimes.count("application/vnd.plotly.v1+json") >= 2  # loss curves, pass-rate bars


@pytest.mark.notebook
def test_notebook_03_trains_and_diagnoses_the_reward_model(tiny_run):
    from helpers.config import RewardStageConfig

    cfg = RewardStageConfig.from_profile("tiny")
    reward = tiny_run / "reward"
    meta = read_json(reward / "meta.json")
    train = [json.loads(line) for line in (reward / "comparisons_train.jsonl").read_text().splitlines()]
    heldout = [json.loads(line) for line in (reward / "comparisons_heldout.jsonl").read_text().splitlines()]
    assert (meta["train_pairs"], meta["heldout_pairs"]) == (len(train), len(heldout)) and heldout
    rm_train = {p["prompt_id"] for p in train if "-rm-" in p["prompt_id"]}
    assert rm_train.isdisjoint({p["prompt_id"] for p in heldout})
    assert all("-sft-" in p["prompt_id"] for p in train if "-rm-" not in p["prompt_id"])  # base candidates' pairs
    swapped = [p for p in train if "-swap-" in p["id"]]  # relevance pairs, on any training prompt
    assert len(swapped) == meta["comparisons"].get("swapped_train_pairs", 0) <= cfg.swapped_pairs
    assert all(p["prompt_id"] not in {h["prompt_id"] for h in heldout} for p in swapped)
    assert sum("-sft-" in p["prompt_id"] for p in train if p not in swapped) == meta["comparisons"]["extra_train_pairs"]
    assert all(p["chosen_score"] > p["rejected_score"] and p["chosen"] != p["rejected"] for p in train + heldout)
    for name in ("adapter/adapter_model.safetensors", "score_head.safetensors", "normalisation.json"):
        assert (reward / "model" / name).exists(), name
    assert meta["normalisation"]["n"] == cfg.k_samples * len(rm_train) and meta["normalisation"]["scale"] > 0
    diagnostics = meta["diagnostics"]
    assert diagnostics["heldout_pairs"] == len(heldout) and 0.0 <= diagnostics["heldout_accuracy"] <= 1.0
    held_prompts = {p["prompt_id"] for p in heldout}
    assert diagnostics["heldout_answers"] == cfg.k_samples * len(held_prompts)  # every answer, paired or not
    assert -1.0 <= diagnostics["spearman_reward_gold"] <= 1.0
    answers = read_jsonl(reward / "heldout_answers_scored.jsonl")
    within = within_prompt_spearman([a["prompt_id"] for a in answers], [a["reward"] for a in answers],
                                    [a["gold"] for a in answers])
    assert diagnostics["spearman_within_prompt"] == pytest.approx(within, nan_ok=True)
    accuracy, n_pairs = within_prompt_agreement([a["prompt_id"] for a in answers], [a["gold"] for a in answers],
                                                [a["reward"] for a in answers], cfg.min_gold_gap)
    by_reason = diagnostics["accuracy_by_reason"]  # the same pairs of held-out answers, split by what decided them
    assert sum(r["pairs"] for r in by_reason.values()) == n_pairs
    if n_pairs:
        assert sum(r["pairs"] * r["accuracy"] for r in by_reason.values()) / n_pairs == pytest.approx(accuracy)

    text, mimes = _outputs(tiny_run / "notebooks" / "03_reward_model.ipynb")
    assert f"train {len(train)} pairs, held out {len(heldout)} pairs" in text
    assert "heldout_accuracy" in text and "spearman_reward_gold" in text
    assert mimes.count("application/vnd.plotly.v1+json") >= 2  # loss curve, reward histogram


@pytest.mark.notebook
def test_notebook_01_reuses_a_finished_stage_and_refuses_other_settings(tiny_run, tmp_path):
    import papermill

    data = tiny_run / "data"
    before = {p.name: sha256(p) for p in data.glob("*.jsonl")}
    notebook = REPO_ROOT / "notebooks" / "01_instruction_data.ipynb"
    params = {"PROFILE": "tiny", "RUN_DIR": str(tiny_run)}
    papermill.execute_notebook(str(notebook), str(tmp_path / "again.ipynb"), parameters=params,
                               kernel_name="python3", progress_bar=False, cwd=str(notebook.parent))
    assert {p.name: sha256(p) for p in data.glob("*.jsonl")} == before
    text, _ = _outputs(tmp_path / "again.ipynb")
    assert "stage: data/ (finished)" in text
    with pytest.raises(papermill.PapermillExecutionError, match="data.n_candidates: 2 -> 3"):
        papermill.execute_notebook(str(notebook), str(tmp_path / "other.ipynb"),
                                   parameters={**params, "N_CANDIDATES": 3}, kernel_name="python3",
                                   progress_bar=False, cwd=str(notebook.parent))


HH_SAMPLE = REPO_ROOT.parent / "shared" / "datasets" / "hh-rlhf" / "harmless-base-test.jsonl.gz"


def _run_01(tmp_path, **parameters):
    import papermill

    notebook = REPO_ROOT / "notebooks" / "01_instruction_data.ipynb"
    output = tmp_path / "01.ipynb"
    papermill.execute_notebook(str(notebook), str(output), kernel_name="python3", progress_bar=False,
                               cwd=str(notebook.parent),
                               parameters={"PROFILE": "tiny", "RUN_DIR": str(tmp_path / "run"), **parameters})
    return output, read_json(tmp_path / "run" / "data" / "meta.json")


@pytest.mark.notebook
@pytest.mark.skipif(not HH_SAMPLE.exists(), reason=f"HH-RLHF sample not found at {HH_SAMPLE}")
def test_notebook_01_builds_from_local_hh_rlhf_preferences(tmp_path):
    output, meta = _run_01(tmp_path, SOURCE="hh-rlhf", DATASET=str(HH_SAMPLE))
    assert meta["source"] == "hh-rlhf" and meta["counts"] == {"sft": 8, "rm": 16, "ppo": 8, "eval": 8}
    assert meta["demonstrations"]["kept"] == 8  # the chosen replies of the SFT prompts
    rm_rows = [json.loads(line) for line in (tmp_path / "run" / "data" / "rm.jsonl").read_text().splitlines()]
    assert all(r["chosen"] != r["rejected"] and r["messages"][-1]["role"] == "user" for r in rm_rows)
    text, _ = _outputs(output)
    assert "real data carries no constraints" in text


@pytest.mark.notebook
def test_notebook_01_builds_from_a_local_instruction_file(tmp_path):
    records = [{"instruction": f"Name a use of the number {i}.", "context": "" if i % 2 else f"Think of {i} apples.",
                "response": f"The number {i} counts things."} for i in range(50)]
    path = tmp_path / "dolly.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    _, meta = _run_01(tmp_path, SOURCE="instructions", DATASET=str(path))
    assert meta["source"] == "instructions" and meta["demonstrations"]["kept"] == 8 and meta["skipped"] == {}
    demos = [json.loads(line) for line in (tmp_path / "run" / "data" / "demonstrations.jsonl").read_text().splitlines()]
    assert all(d["response"].startswith("The number") for d in demos)

"""Tests for helpers.runs: the stage-folder protocol (fresh, resuming, finished, conflict, overwrite)."""

import json
from pathlib import Path

import pytest

from helpers.config import DataConfig, ModelConfig
from helpers.files import read_json
from helpers.runs import (
    PACKAGES,
    REPO_ROOT,
    StageConflict,
    default_run_dir,
    environ_flag,
    open_stage,
    package_versions,
    require_finished,
    require_inputs,
)

CONFIG = {"seed": 0, "n_sft": 8, "source": "generated", "dataset": None, "temperature": 1.0}


def test_fresh_stage_writes_config(tmp_path):
    path = tmp_path / "run" / "data"
    stage = open_stage(path, CONFIG)
    assert (stage.path, stage.state, stage.finished) == (path, "fresh", False)
    assert read_json(path / "config.json") == CONFIG
    assert sorted(p.name for p in path.iterdir()) == ["config.json"]


def test_empty_existing_folder_is_fresh(tmp_path):
    path = tmp_path / "data"
    path.mkdir()
    assert open_stage(path, CONFIG).state == "fresh"


def test_same_config_resumes_and_keeps_work(tmp_path):
    path = tmp_path / "data"
    open_stage(path, CONFIG)
    (path / "samples.jsonl").write_text('{"id": 1}\n', encoding="utf-8")
    stage = open_stage(path, dict(reversed(list(CONFIG.items()))))  # key order does not matter
    assert (stage.state, stage.finished) == ("resuming", False)
    assert (path / "samples.jsonl").read_text(encoding="utf-8") == '{"id": 1}\n'


def test_finish_writes_meta_and_marks_finished(tmp_path):
    path = tmp_path / "data"
    stage = open_stage(path, CONFIG)
    stage.finish({"metrics": {"rows": 32}, "inputs": {"sft.jsonl": {"rows": 8}}})
    assert (stage.state, stage.finished) == ("finished", True)
    meta = stage.meta()
    assert meta == read_json(path / "meta.json")
    assert meta["metrics"] == {"rows": 32}
    assert meta["inputs"] == {"sft.jsonl": {"rows": 8}}
    assert meta["config"] == CONFIG
    assert set(meta["versions"]) == {"python", *PACKAGES}
    assert meta["versions"] == package_versions()
    assert meta["finished"].endswith("+00:00")  # UTC, ISO 8601

    again = open_stage(path, CONFIG)
    assert (again.state, again.finished) == ("finished", True)
    assert again.meta() == meta


def test_finished_stage_with_same_config_is_reused_even_with_overwrite(tmp_path):
    path = tmp_path / "data"
    open_stage(path, CONFIG).finish({})
    stage = open_stage(path, CONFIG, overwrite=True)
    assert stage.state == "finished"
    assert list(tmp_path.iterdir()) == [path]


@pytest.mark.parametrize("finished, what", [(False, "an unfinished stage"), (True, "a finished stage")])
def test_other_config_is_refused_naming_the_field(tmp_path, finished, what):
    path = tmp_path / "data"
    stage = open_stage(path, CONFIG)
    if finished:
        stage.finish({})
    with pytest.raises(StageConflict) as info:
        open_stage(path, {**CONFIG, "n_sft": 16})
    message = str(info.value)
    assert message.startswith(f"{path} holds {what} built with other settings (n_sft: 8 -> 16)")
    assert "RUN_DIR" in message and "OVERWRITE=True" in message
    assert read_json(path / "config.json") == CONFIG  # nothing touched


def test_conflict_lists_every_difference_including_added_and_removed_keys(tmp_path):
    path = tmp_path / "data"
    open_stage(path, CONFIG)
    new = {**CONFIG, "seed": 1, "extra": True}
    del new["dataset"]
    with pytest.raises(StageConflict) as info:
        open_stage(path, new)
    assert "(extra: None -> True; seed: 0 -> 1)" in str(info.value)  # a dropped None key reads as unchanged


def test_a_field_added_later_reads_as_its_old_behaviour_in_stages_made_before_it(tmp_path):
    path = tmp_path / "ppo"
    old = {"ppo": {"iterations": 24}, "model": {"load_in_4bit": True}}  # made before warmup_iterations existed
    open_stage(path, old).finish({})
    assert read_json(path / "config.json") == old
    new = {"ppo": {"iterations": 24, "warmup_iterations": 0}, "model": {"load_in_4bit": True}}
    assert open_stage(path, new).state == "finished"  # 0 is how the old stage behaved: reused
    with pytest.raises(StageConflict, match=r"\(ppo.warmup_iterations: 0 -> 6\)"):
        open_stage(path, {**new, "ppo": {"iterations": 24, "warmup_iterations": 6}})
    with pytest.raises(StageConflict, match=r"model.warmup_iterations: None -> 0"):  # only in its own section
        open_stage(path, {**new, "model": {"load_in_4bit": True, "warmup_iterations": 0}})


def test_overwrite_moves_the_old_folder_aside(tmp_path):
    path = tmp_path / "data"
    stage = open_stage(path, CONFIG)
    (path / "samples.jsonl").write_text('{"id": 1}\n', encoding="utf-8")
    stage.finish({"metrics": {"old": True}})
    new_config = {**CONFIG, "n_sft": 16}

    stage = open_stage(path, new_config, overwrite=True)
    assert stage.state == "fresh"
    assert sorted(p.name for p in path.iterdir()) == ["config.json"]
    assert read_json(path / "config.json") == new_config

    aside = list(tmp_path.glob("data.old-*"))
    assert len(aside) == 1
    assert sorted(p.name for p in aside[0].iterdir()) == ["config.json", "meta.json", "samples.jsonl"]
    assert read_json(aside[0] / "config.json") == CONFIG
    assert read_json(aside[0] / "meta.json")["metrics"] == {"old": True}
    assert (aside[0] / "samples.jsonl").read_text(encoding="utf-8") == '{"id": 1}\n'


def test_two_overwrites_in_one_second_keep_both_old_versions(tmp_path):
    path = tmp_path / "data"
    for n in (1, 2, 3):
        open_stage(path, {**CONFIG, "n_sft": n}, overwrite=True)
        (path / f"work-{n}.txt").write_text(str(n), encoding="utf-8")
    kept = sorted(p.name for p in tmp_path.rglob("work-*.txt") if "old" in str(p.relative_to(tmp_path)))
    assert kept == ["work-1.txt", "work-2.txt"]
    assert read_json(path / "config.json")["n_sft"] == 3


def test_non_empty_folder_without_config_is_refused(tmp_path):
    path = tmp_path / "data"
    path.mkdir()
    (path / "precious.txt").write_text("keep me", encoding="utf-8")
    with pytest.raises(StageConflict) as info:
        open_stage(path, CONFIG)
    assert str(info.value) == f"{path} is not empty but has no config.json; move it away or set OVERWRITE=True."
    assert sorted(p.name for p in path.iterdir()) == ["precious.txt"]

    stage = open_stage(path, CONFIG, overwrite=True)
    assert stage.state == "fresh"
    assert sorted(p.name for p in path.iterdir()) == ["config.json"]
    (aside,) = tmp_path.glob("data.old-*")
    assert (aside / "precious.txt").read_text(encoding="utf-8") == "keep me"


def test_notebook_config_resumes(tmp_path):
    """The config the data notebook passes (two configs' to_dict) survives the JSON round trip unchanged."""
    config = {"data": DataConfig.from_profile("tiny").to_dict(), "model": ModelConfig.from_profile("tiny").to_dict()}
    open_stage(tmp_path / "data", config)
    assert open_stage(tmp_path / "data", config).state == "resuming"


def test_same_config_with_a_tuple_resumes(tmp_path):
    config = {"lora_targets": ("q_proj", "v_proj")}
    open_stage(tmp_path / "sft", config)
    assert open_stage(tmp_path / "sft", config).state == "resuming"


def test_conflict_on_the_notebook_nested_config_names_only_the_changed_field(tmp_path):
    path = tmp_path / "data"
    model = ModelConfig.from_profile("tiny").to_dict()
    open_stage(path, {"data": DataConfig.from_profile("tiny").to_dict(), "model": model})
    changed = {"data": DataConfig.from_profile("tiny", n_sft=9, seed=2).to_dict(),
               "model": {**model, "device": "cpu"}}
    with pytest.raises(StageConflict) as info:
        open_stage(path, changed)
    message = str(info.value)
    assert message.startswith(
        f"{path} holds an unfinished stage built with other settings "
        "(data.n_sft: 8 -> 9; data.seed: 0 -> 2; model.device: 'auto' -> 'cpu')."
    )
    assert "temperature" not in message  # unchanged fields are not listed


def test_require_finished(tmp_path):
    path = tmp_path / "data"
    with pytest.raises(FileNotFoundError) as info:
        require_finished(path, "01_instruction_data.ipynb")
    assert str(info.value) == (
        f"{path / 'meta.json'} not found: run notebook 01_instruction_data.ipynb first (with the same RUN_DIR).")

    stage = open_stage(path, CONFIG)
    with pytest.raises(FileNotFoundError, match="run notebook 01_instruction_data.ipynb first"):
        require_finished(path, "01_instruction_data.ipynb")  # started is not finished
    stage.finish({"metrics": {"rows": 3}})
    meta = require_finished(path, "01_instruction_data.ipynb")
    assert meta["metrics"] == {"rows": 3} and meta["config"] == CONFIG


def test_default_run_dir():
    assert default_run_dir("tiny") == REPO_ROOT / "runs" / "tiny"
    assert default_run_dir("tiny", "/tmp/elsewhere") == Path("/tmp/elsewhere")
    assert REPO_ROOT == Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("value, expected", [("1", True), ("true", True), (" YES ", True), ("0", False),
                                             ("", False), ("no", False), (None, False)])
def test_environ_flag(monkeypatch, value, expected):
    if value is None:
        monkeypatch.delenv("RLHF_TEST_FLAG", raising=False)
    else:
        monkeypatch.setenv("RLHF_TEST_FLAG", value)
    assert environ_flag("RLHF_TEST_FLAG") is expected


def test_meta_json_is_valid_json_on_disk(tmp_path):
    stage = open_stage(tmp_path / "data", CONFIG)
    stage.finish({"note": "café"})
    text = (tmp_path / "data" / "meta.json").read_text(encoding="utf-8")
    assert json.loads(text)["note"] == "café"


def _finished_stage(run_dir: Path, name: str, config: dict, meta: dict | None = None) -> dict:
    stage = open_stage(run_dir / name, config)
    stage.finish(meta or {})
    return read_json(run_dir / name / "meta.json")


def test_require_inputs_names_the_notebook_to_run_or_re_run(tmp_path):
    run = tmp_path / "run"
    with pytest.raises(FileNotFoundError, match="run notebook 01_instruction_data.ipynb first"):
        require_inputs(run, "sft")
    data = _finished_stage(run, "data", CONFIG, {"files": {"sft.jsonl": {"sha256": "a"}}})
    assert set(require_inputs(run, "sft")) == {"data"}
    with pytest.raises(FileNotFoundError, match="run notebook 02_supervised_finetuning.ipynb first"):
        require_inputs(run, "reward")
    sft = _finished_stage(run, "sft", {"sft": {"epochs": 1}, "data_files": data["files"]})
    reward = _finished_stage(run, "reward", {"reward": {}, "data_files": data["files"],
                                             "sft_finished": sft["finished"]})
    _finished_stage(run, "ppo", {"ppo": {}, "data_files": data["files"], "sft_finished": sft["finished"],
                                 "reward_finished": reward["finished"]})
    assert set(require_inputs(run, "ppo")) == {"data", "sft", "reward"}
    with pytest.raises(FileNotFoundError, match="run notebook 05_dpo.ipynb first"):
        require_inputs(run, "eval")  # ppo is there, dpo is not

    meta = read_json(run / "sft" / "meta.json")  # notebook 02 ran again: sft/ finished later than reward/ knows
    (run / "sft" / "meta.json").write_text(json.dumps({**meta, "finished": "later"}))
    with pytest.raises(StageConflict, match=r"sft was rebuilt after reward/ was made from it: re-run notebook 03"):
        require_inputs(run, "ppo")

    (run / "sft" / "meta.json").write_text(json.dumps(meta))
    (run / "data" / "meta.json").write_text(json.dumps({**data, "files": {"sft.jsonl": {"sha256": "new"}}}))
    with pytest.raises(StageConflict, match=r"data changed after sft/ was made from it: re-run notebook 02"):
        require_inputs(run, "reward")

"""Tests for helpers.config: profiles, overrides, validation messages and the config table."""

import dataclasses

import pandas as pd
import pytest

from helpers.config import CPU_CONSTRAINT_KINDS, EMBEDDED_MODEL, PROFILES, ConfigError, DataConfig, ModelConfig, PPOStageConfig

# ---------------------------------------------------------------------------
# Profiles
# ---------------------------------------------------------------------------

def test_profiles_are_tiny_cpu_gpu():
    assert PROFILES == ("tiny", "cpu", "gpu")


def test_data_tiny_profile_values():
    cfg = DataConfig.from_profile("tiny")
    assert cfg.profile == "tiny"
    assert cfg.split_sizes == {"sft": 8, "rm": 16, "ppo": 8, "eval": 8}
    assert (cfg.n_candidates, cfg.demo_threshold, cfg.max_new_tokens, cfg.batch_size) == (2, 0.0, 32, 16)
    assert cfg.source == "generated" and cfg.dataset is None and cfg.seed == 0
    # one set of sampling settings for every stage that samples answers to judge
    assert cfg.sampling == {"max_new_tokens": 32, "temperature": 1.0, "top_p": 1.0, "batch_size": 16, "seed": 0}
    assert DataConfig.from_profile("tiny", seed=3, top_p=0.9).sampling | {"seed": 0, "top_p": 1.0} == cfg.sampling


def test_data_cpu_profile_is_the_dataclass_defaults():
    cfg = DataConfig.from_profile("cpu")
    assert cfg == DataConfig()
    assert cfg.split_sizes == {"sft": 128, "rm": 128, "ppo": 256, "eval": 96}
    assert (cfg.n_candidates, cfg.demo_threshold, cfg.max_new_tokens, cfg.batch_size) == (8, 0.3, 64, 64)


def test_data_gpu_profile_values():
    cfg = DataConfig.from_profile("gpu")
    assert cfg.profile == "gpu"
    assert cfg.split_sizes == {"sft": 1024, "rm": 1024, "ppo": 2048, "eval": 256}
    assert (cfg.n_candidates, cfg.max_new_tokens, cfg.batch_size) == (8, 160, 128)
    assert cfg.demo_threshold == 0.3  # not overridden by the gpu profile


@pytest.mark.parametrize("profile", ["tiny", "cpu"])
def test_model_small_profiles_use_the_embedded_model(profile):
    cfg = ModelConfig.from_profile(profile)
    assert cfg.profile == profile
    assert cfg.base_model == EMBEDDED_MODEL == "embedded:SmolLM2-135M-Instruct"
    # tiny always loads NF4 (the tests exercise the 4-bit path); cpu chooses per machine (helpers.models)
    load_in_4bit = {"tiny": True, "cpu": "auto"}[profile]
    assert (cfg.device, cfg.load_in_4bit, cfg.compute_dtype, cfg.trust_remote_code) == ("auto", load_in_4bit, "auto", False)


def test_model_gpu_profile():
    cfg = ModelConfig.from_profile("gpu")
    assert cfg.base_model == "HuggingFaceTB/SmolLM2-1.7B-Instruct"
    assert cfg.device == "cuda"
    assert cfg.load_in_4bit is True


def test_overrides_apply_on_top_of_the_profile():
    cfg = DataConfig.from_profile("tiny", n_candidates=8, seed=3)
    assert (cfg.n_candidates, cfg.seed) == (8, 3)
    assert cfg.n_sft == 8  # the rest of the tiny profile is kept


def test_none_overrides_are_ignored():
    cfg = DataConfig.from_profile("tiny", n_sft=None, seed=None, source=None, dataset=None)
    assert cfg == DataConfig.from_profile("tiny")
    model = ModelConfig.from_profile("gpu", base_model=None)
    assert model.base_model == "HuggingFaceTB/SmolLM2-1.7B-Instruct"


def test_split_sizes_follow_overrides_in_split_order():
    cfg = DataConfig.from_profile("cpu", n_sft=1, n_rm=2, n_ppo=3, n_eval=4)
    assert list(cfg.split_sizes.items()) == [("sft", 1), ("rm", 2), ("ppo", 3), ("eval", 4)]


def test_configs_are_frozen_and_round_trip_through_to_dict():
    cfg = DataConfig.from_profile("tiny", seed=5)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.seed = 6
    assert DataConfig(**cfg.to_dict()) == cfg
    assert ModelConfig(**ModelConfig.from_profile("gpu").to_dict()) == ModelConfig.from_profile("gpu")


# ---------------------------------------------------------------------------
# Errors name the field and what it accepts
# ---------------------------------------------------------------------------

def test_config_error_is_a_value_error():
    assert issubclass(ConfigError, ValueError)


def test_unknown_profile():
    with pytest.raises(ConfigError) as info:
        DataConfig.from_profile("laptop")
    message = str(info.value)
    assert message.startswith("profile: 'laptop'")
    assert "tiny, cpu, gpu" in message


def test_unknown_field_names_it_and_lists_the_fields():
    with pytest.raises(ConfigError) as info:
        DataConfig.from_profile("tiny", n_sfts=3, zeta=1)
    message = str(info.value)
    assert message.startswith("DataConfig: unknown field(s) n_sfts, zeta")
    for name in ("n_sft", "n_rm", "seed", "source", "top_p"):
        assert name in message.split("fields are:")[1]


@pytest.mark.parametrize(
    "cls, field, value, allowed",
    [
        (DataConfig, "source", "web", "'generated', 'hh-rlhf', 'instructions'"),
        (ModelConfig, "device", "tpu", "'auto', 'cpu', 'cuda'"),
        (ModelConfig, "compute_dtype", "int8", "'auto', 'float32', 'bfloat16', 'float16'"),
        (ModelConfig, "load_in_4bit", "yes", "True, False, 'auto'"),
    ],
)
def test_bad_choice_names_field_and_allowed_values(cls, field, value, allowed):
    with pytest.raises(ConfigError) as info:
        cls.from_profile("cpu", **{field: value})
    assert str(info.value) == f"{cls.__name__}.{field}: {value!r} is not allowed; choose one of {allowed}"


@pytest.mark.parametrize(
    "overrides, field, expected",
    [
        ({"n_sft": 0}, "n_sft", "an integer >= 1"),
        ({"n_eval": -1}, "n_eval", "an integer >= 1"),
        ({"batch_size": 0}, "batch_size", "an integer >= 1"),
        ({"min_constraints": 0}, "min_constraints", "1, 2 or 3"),
        ({"min_constraints": 3, "max_constraints": 2}, "max_constraints", "min_constraints..3"),
        ({"max_constraints": 4}, "max_constraints", "min_constraints..3"),
        ({"eval_topic_fraction": 1.0}, "eval_topic_fraction", "a number strictly between 0 and 1"),
        ({"eval_topic_fraction": 0.0}, "eval_topic_fraction", "a number strictly between 0 and 1"),
        ({"demo_threshold": 1.5}, "demo_threshold", "a gold score in [0, 1]"),
        ({"temperature": 0.0}, "temperature", "a number > 0"),
        ({"top_p": 0.0}, "top_p", "a number in (0, 1]"),
        ({"top_p": 1.01}, "top_p", "a number in (0, 1]"),
    ],
)
def test_bad_range_names_field_and_expectation(overrides, field, expected):
    with pytest.raises(ConfigError) as info:
        DataConfig.from_profile("tiny", **overrides)
    value = overrides[field]
    assert str(info.value) == f"DataConfig.{field}: {value!r} is invalid; expected {expected}"


def test_constraint_kinds_are_checked_and_kept_as_a_tuple():
    with pytest.raises(ConfigError, match=r"DataConfig\.constraint_kinds: \('title', 'haiku'\) is invalid; expected "
                                          r"distinct kinds from: word_count_max"):
        DataConfig.from_profile("tiny", constraint_kinds=("title", "haiku"))
    with pytest.raises(ConfigError, match="constraint_kinds"):
        DataConfig.from_profile("tiny", constraint_kinds=("title", "title"))
    cfg = DataConfig.from_profile("tiny", constraint_kinds=["title", "start_with"])  # a list, as JSON gives it back
    assert cfg.constraint_kinds == ("title", "start_with")
    assert DataConfig(**cfg.to_dict()) == cfg


def test_the_cpu_curriculum_fits_its_budget_and_the_gpu_keeps_the_full_task():
    cpu, gpu, tiny = (DataConfig.from_profile(p) for p in ("cpu", "gpu", "tiny"))
    assert cpu.constraint_kinds == CPU_CONSTRAINT_KINDS and cpu.max_constraints == 1
    assert len(CPU_CONSTRAINT_KINDS) >= 6
    families = {"length": {"word_count_max", "word_count_min", "sentence_count_max", "paragraph_count"},
                "wording": {"include_keyword", "exclude_keyword", "keyword_frequency", "start_with", "end_with",
                            "no_commas", "lowercase", "uppercase"},
                "layout": {"title", "postscript", "bullet_count", "json_keys", "quotation"}}
    assert all(set(CPU_CONSTRAINT_KINDS) & kinds for kinds in families.values())  # three families at least
    assert (gpu.constraint_kinds, gpu.max_constraints) == ((), 3) and tiny.constraint_kinds == ()
    # PPO on cpu rolls out under the evaluation's token limit, so it trains on the length it is judged on
    assert PPOStageConfig.from_profile("cpu").max_new_tokens == cpu.max_new_tokens


def test_range_edges_are_accepted():
    cfg = DataConfig.from_profile("tiny", n_sft=1, min_constraints=3, max_constraints=3, demo_threshold=1.0,
                                  top_p=1.0, eval_topic_fraction=0.99, temperature=1e-3)
    assert (cfg.n_sft, cfg.min_constraints, cfg.max_constraints, cfg.top_p) == (1, 3, 3, 1.0)


@pytest.mark.parametrize("value", ["8", True, None, [8]])
def test_numeric_field_rejects_non_numbers(value):
    with pytest.raises(ConfigError, match=r"DataConfig\.n_sft: expected an integer, got"):
        DataConfig(profile="tiny", n_sft=value)


def test_empty_base_model_is_refused():
    with pytest.raises(ConfigError, match=r"ModelConfig\.base_model: '  ' is invalid; expected a model name or folder"):
        ModelConfig.from_profile("cpu", base_model="  ")


@pytest.mark.parametrize("source", ["hh-rlhf", "instructions"])
def test_real_data_source_needs_a_dataset(source):
    with pytest.raises(ConfigError) as info:
        DataConfig.from_profile("tiny", source=source)
    assert str(info.value) == (
        f"DataConfig.dataset: None is invalid; expected a Hub id or local file when source={source!r}"
    )
    cfg = DataConfig.from_profile("tiny", source=source, dataset="some/file.jsonl")
    assert (cfg.source, cfg.dataset) == (source, "some/file.jsonl")


def test_generated_source_needs_no_dataset():
    assert DataConfig.from_profile("tiny", source="generated").dataset is None


def test_int_field_rejects_a_float():
    with pytest.raises(ConfigError, match="n_sft"):
        DataConfig.from_profile("tiny", n_sft=2.5)


# ---------------------------------------------------------------------------
# The config table
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("cls", [DataConfig, ModelConfig])
def test_table_has_every_field_with_help(cls):
    cfg = cls.from_profile("tiny")
    table = cfg.table()
    assert isinstance(table, pd.DataFrame)
    names = [f.name for f in dataclasses.fields(cls)]
    assert list(table.index) == names
    assert table.index.name == "field"
    assert list(table.columns) == ["value", "help"]
    for name in names:
        assert table.loc[name, "value"] == repr(getattr(cfg, name))
        help_text = table.loc[name, "help"]
        assert isinstance(help_text, str) and len(help_text.strip()) >= 10, name


def test_table_shows_overridden_values():
    table = DataConfig.from_profile("tiny", n_candidates=8, dataset=None).table()
    assert table.loc["n_candidates", "value"] == "8"
    assert table.loc["profile", "value"] == "'tiny'"
    assert table.loc["dataset", "value"] == "None"


def test_best_of_n_must_fit_in_a_generation_batch():
    with pytest.raises(ConfigError, match=r"DataConfig\.n_candidates: 8 is invalid; expected at most batch_size \(4\)"):
        DataConfig.from_profile("tiny", n_candidates=8, batch_size=4)

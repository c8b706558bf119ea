"""Stage configurations, each built from a named profile.

One frozen dataclass per stage. Every field carries its one-line help text once,
in ``metadata["help"]``, where the notebooks' config tables read it. A profile is
a named set of overrides on the dataclass defaults:

* ``tiny`` -- tests and CI: the whole workbook in minutes, numbers meaningless;
* ``cpu``  -- 2 CPU cores: small, but large enough to show real learning;
* ``gpu``  -- one CUDA GPU: 4-bit, a larger Hub model, more data.

Build a config with ``DataConfig.from_profile("cpu", n_candidates=8)``. An
unknown profile, unknown field or invalid value raises :class:`ConfigError`
naming the field and what it accepts. (Pattern: CleanRL's ``Args`` and TRL's
per-trainer configs, with the help text written once.)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar

from .constraints import CONSTRAINT_KINDS

PROFILES = ("tiny", "cpu", "gpu")

#: The embedded default model: SmolLM2-135M-Instruct, carried offline inside a PyPI wheel.
EMBEDDED_MODEL = "embedded:SmolLM2-135M-Instruct"


#: The ``cpu`` profile's curriculum: six of the 17 constraint kinds, one per prompt, from three families.
#: Chosen by measurement: kinds short enough to finish within 64 tokens, met by SmolLM2-135M-Instruct
#: sometimes or taught by notebook 01's edited demonstrations (``benchmarks/constraint_kinds.py``,
#: 2026-12-01), and marked by something a 135M reward model can see in the answer itself. The first mix
#: had "include a keyword" and "start with a word" as its wording kinds: both ask the answer to copy a word
#: from the prompt, and the reward model ranked the pairs they decided 39 % (80 pairs) and 47 % (34) right
#: on notebook 06's pool, against 89 % for sentence counts and 78 % for "P.S." lines (2026-12-04,
#: docs/results.md); PPO then traded the keyword away. Lowercase and no commas replaced them: visible
#: in every token. Left out: kinds no edit rule produces (JSON, bullet and paragraph counts), one met
#: nearly always (excluding a word), and word minimums (rarely finished). ``gpu`` keeps all 17.
CPU_CONSTRAINT_KINDS = (
    "word_count_max", "sentence_count_max",  # length
    "lowercase", "no_commas",  # wording
    "title", "postscript",  # layout
)


class ConfigError(ValueError):
    """A profile, field or value that the configuration does not accept."""


def _field(default: Any, help: str, choices: tuple | None = None) -> Any:
    return field(default=default, metadata={"help": help, "choices": choices})


class StageConfig:
    """Mixin: profile construction, validation and display shared by all stage configs."""

    PROFILE_OVERRIDES: ClassVar[dict[str, dict[str, Any]]] = {}

    @classmethod
    def from_profile(cls, profile: str, **overrides: Any):
        """The profile's settings, then ``overrides`` (None values are ignored)."""
        if profile not in PROFILES:
            raise ConfigError(f"profile: {profile!r} is not a profile; choose one of {', '.join(PROFILES)}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise ConfigError(
                f"{cls.__name__}: unknown field(s) {', '.join(unknown)}; fields are: {', '.join(sorted(names))}"
            )
        values = {"profile": profile, **cls.PROFILE_OVERRIDES.get(profile, {})}
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            choices = f.metadata.get("choices")
            if choices is not None and value not in choices:
                allowed = ", ".join(repr(c) for c in choices)
                raise ConfigError(f"{type(self).__name__}.{f.name}: {value!r} is not allowed; choose one of {allowed}")
            expected = {"int": (int,), "float": (int, float), "bool": (bool,)}.get(f.type)
            if expected and (not isinstance(value, expected) or (isinstance(value, bool) and f.type != "bool")):
                kind = {"int": "an integer", "float": "a number", "bool": "True or False"}[f.type]
                raise ConfigError(f"{type(self).__name__}.{f.name}: expected {kind}, got {value!r}")
        self.validate()

    def validate(self) -> None:
        """Range checks; subclasses raise ConfigError naming the field."""

    def _require(self, condition: bool, name: str, expected: str) -> None:
        if not condition:
            raise ConfigError(f"{type(self).__name__}.{name}: {getattr(self, name)!r} is invalid; expected {expected}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def table(self):
        """The config as a pandas table: field, value, help."""
        import pandas as pd  # lazy: pandas takes a while to import; config must stay light

        rows = [
            {"field": f.name, "value": repr(getattr(self, f.name)), "help": f.metadata.get("help", "")}
            for f in dataclasses.fields(self)
        ]
        return pd.DataFrame(rows).set_index("field")


@dataclass(frozen=True)
class ModelConfig(StageConfig):
    """The base model every stage loads, and how it is quantised."""

    profile: str = _field("cpu", "profile these settings came from", PROFILES)
    base_model: str = _field(EMBEDDED_MODEL, f"'{EMBEDDED_MODEL}' (offline), a Hugging Face Hub id, or a local folder")
    load_in_4bit: bool | str = _field(
        "auto", "quantise the linear layers to 4-bit NF4 with bitsandbytes (QLoRA); auto = NF4 on CUDA (memory), plain "
        "weights on a CPU (measured faster there: bfloat16 with native bfloat16, else float32)",
        (True, False, "auto"),
    )
    compute_dtype: str = _field(
        "auto", "dtype of the matmuls; auto = bfloat16 on CUDA; on CPU bfloat16 for plain weights on a CPU with "
        "native bfloat16, else float32 (measured faster)",
        ("auto", "float32", "bfloat16", "float16"),
    )
    device: str = _field("auto", "auto = cuda when available, else cpu", ("auto", "cpu", "cuda"))
    trust_remote_code: bool = _field(False, "run model code shipped with a Hub repo (off: security)", (True, False))

    PROFILE_OVERRIDES: ClassVar[dict[str, dict[str, Any]]] = {
        "tiny": {"load_in_4bit": True},  # tests and CI exercise the 4-bit path on every machine
        "gpu": {"base_model": "HuggingFaceTB/SmolLM2-1.7B-Instruct", "device": "cuda", "load_in_4bit": True},
    }

    def validate(self) -> None:
        self._require(bool(self.base_model.strip()), "base_model", "a model name or folder")


@dataclass(frozen=True)
class DataConfig(StageConfig):
    """Notebook 01: the instruction dataset, the base model's baseline, and demonstrations."""

    profile: str = _field("cpu", "profile these settings came from", PROFILES)
    source: str = _field(
        "generated", "generated = verifiable instructions + simulated labeler; hh-rlhf / instructions = real data",
        ("generated", "hh-rlhf", "instructions"),
    )
    dataset: str | None = _field(None, "for hh-rlhf / instructions: a Hub dataset id, or a local .jsonl/.json/.parquet file")
    seed: int = _field(0, "seed for prompt generation, splits and sampling")
    n_sft: int = _field(128, "prompts for supervised fine-tuning (demonstrations are drawn for these)")
    n_rm: int = _field(128, "prompts for reward-model comparisons (each gives up to K(K-1)/2 pairs)")
    n_ppo: int = _field(256, "prompts for PPO rollouts")
    n_eval: int = _field(96, "held-out evaluation prompts (their topics never appear in the other splits)")
    constraint_kinds: tuple = _field(CPU_CONSTRAINT_KINDS, "the constraint kinds prompts draw from (empty: all 17); "
                                                           "cpu: a curriculum of six (CPU_CONSTRAINT_KINDS)")
    min_constraints: int = _field(1, "fewest verifiable constraints per prompt")
    max_constraints: int = _field(1, "most verifiable constraints per prompt (cpu: one, so each answer is judged "
                                     "on one instruction)")
    eval_topic_fraction: float = _field(0.2, "share of topics reserved for evaluation")
    n_candidates: int = _field(8, "best-of-N: responses sampled from the base model per SFT prompt")
    demo_threshold: float = _field(0.3, "keep a prompt's best response as a demonstration if its gold score is at least this")
    demos_per_prompt: int = _field(4, "keep up to this many distinct responses per SFT prompt that reach demo_threshold, "
                                      "best first (1: the best only)")
    edit_demonstrations: bool = _field(True, "also consider each candidate edited by rule (cut-off tail trimmed, missed "
                                             "constraint met: helpers.edits.edit_answer), judged again; without it the "
                                             "base model's rare skills (titles, P.S. lines) get no demonstration",
                                       (True, False))
    max_new_tokens: int = _field(64, "token limit for sampled responses (data, SFT answers, evaluation)")
    temperature: float = _field(1.0, "sampling temperature")
    top_p: float = _field(1.0, "nucleus sampling cut-off (1.0 = off)")
    batch_size: int = _field(64, "prompts per generation batch")

    PROFILE_OVERRIDES: ClassVar[dict[str, dict[str, Any]]] = {
        # tiny keeps every prompt's best candidate (threshold 0) so later stages always have demonstrations,
        # and draws from every kind (the tests cover them all).
        "tiny": {"constraint_kinds": (), "max_constraints": 3, "n_sft": 8, "n_rm": 16, "n_ppo": 8, "n_eval": 8,
                 "n_candidates": 2, "demo_threshold": 0.0, "demos_per_prompt": 1, "edit_demonstrations": False,
                 "max_new_tokens": 32, "batch_size": 16},
        "gpu": {"constraint_kinds": (), "max_constraints": 3, "n_sft": 1024, "n_rm": 1024, "n_ppo": 2048,
                "n_eval": 256, "n_candidates": 8, "max_new_tokens": 160, "batch_size": 128},
    }

    def validate(self) -> None:
        for name in ("n_sft", "n_rm", "n_ppo", "n_eval", "n_candidates", "demos_per_prompt", "max_new_tokens",
                     "batch_size"):
            self._require(getattr(self, name) >= 1, name, "an integer >= 1")
        object.__setattr__(self, "constraint_kinds", tuple(self.constraint_kinds))  # JSON gives a list back
        kinds = list(self.constraint_kinds)
        self._require(all(kind in CONSTRAINT_KINDS for kind in kinds) and len(set(kinds)) == len(kinds),
                      "constraint_kinds", f"distinct kinds from: {', '.join(CONSTRAINT_KINDS)}")
        self._require(1 <= self.min_constraints <= 3, "min_constraints", "1, 2 or 3")
        self._require(self.min_constraints <= self.max_constraints <= 3, "max_constraints", "min_constraints..3")
        self._require(0.0 < self.eval_topic_fraction < 1.0, "eval_topic_fraction", "a number strictly between 0 and 1")
        self._require(0.0 <= self.demo_threshold <= 1.0, "demo_threshold", "a gold score in [0, 1]")
        self._require(self.n_candidates <= self.batch_size, "n_candidates", f"at most batch_size ({self.batch_size})")
        self._require(self.temperature > 0.0, "temperature", "a number > 0")
        self._require(0.0 < self.top_p <= 1.0, "top_p", "a number in (0, 1]")
        if self.source != "generated":
            self._require(bool(self.dataset), "dataset", f"a Hub id or local file when source={self.source!r}")

    @property
    def split_sizes(self) -> dict[str, int]:
        return {"sft": self.n_sft, "rm": self.n_rm, "ppo": self.n_ppo, "eval": self.n_eval}

    @property
    def sampling(self) -> dict[str, Any]:
        """How every stage samples an answer to judge (base, SFT, reward-model comparisons, evaluation): the
        keyword arguments of ``helpers.demonstrations.sample_and_judge`` and ``contender_answers``."""
        return {"max_new_tokens": self.max_new_tokens, "temperature": self.temperature, "top_p": self.top_p,
                "batch_size": self.batch_size, "seed": self.seed}


@dataclass(frozen=True)
class LoRAStageConfig(StageConfig):
    """Fields shared by the stages that train a LoRA adapter on the 4-bit base (Hu et al., 2021)."""

    profile: str = _field("cpu", "profile these settings came from", PROFILES)
    lora_r: int = _field(16, "LoRA rank r: the adapter adds B·A with A (r x d_in) and B (d_out x r)")
    lora_alpha: int = _field(32, "LoRA scale numerator: the update is (alpha / r) · B·A")
    lora_dropout: float = _field(0.05, "dropout on the adapter's input")
    target_modules: str = _field("all-linear", "linear layers with adapters: 'all-linear', comma-separated names, or a regex")

    def validate(self) -> None:
        for name in ("lora_r", "lora_alpha"):
            self._require(getattr(self, name) >= 1, name, "an integer >= 1")
        self._require(0.0 <= self.lora_dropout < 1.0, "lora_dropout", "a number in [0, 1)")
        self._require(bool(self.target_modules.strip()), "target_modules", "'all-linear', module names or a regex")

    @property
    def lora_targets(self) -> str | list[str]:
        """``target_modules`` as peft expects it: 'all-linear', a regex (full match), or a list of names."""
        if self.target_modules == "all-linear" or any(ch in self.target_modules for ch in "*()[]|\\"):
            return self.target_modules
        return [name.strip() for name in self.target_modules.split(",") if name.strip()]


@dataclass(frozen=True)
class SFTStageConfig(LoRAStageConfig):
    """Notebook 02: supervised fine-tuning of a LoRA adapter on the demonstrations (QLoRA, TRL's SFTTrainer)."""

    learning_rate: float = _field(1e-3, "AdamW learning rate (high: few demonstrations, few steps)")
    epochs: int = _field(2, "passes over the demonstrations (cpu: two passes over ~330, edited ones included)")
    batch_size: int = _field(8, "demonstrations per optimiser step (per device, before accumulation)")
    grad_accum: int = _field(1, "gradient accumulation steps: effective batch = batch_size x grad_accum")
    max_length: int = _field(384, "token limit of prompt + response; longer examples are truncated")
    eval_fraction: float = _field(0.1, "share of demonstrations held out to measure evaluation loss")
    warmup_ratio: float = _field(0.1, "share of steps spent warming the learning rate up linearly")
    save_steps: int = _field(10, "save a resumable checkpoint every this many steps")
    seed: int = _field(0, "seed for the split, adapter initialisation and data order")

    PROFILE_OVERRIDES: ClassVar[dict[str, dict[str, Any]]] = {
        "tiny": {"lora_r": 8, "lora_alpha": 16, "epochs": 1, "batch_size": 4, "max_length": 192, "save_steps": 1,
                 "eval_fraction": 0.25},
        "gpu": {"batch_size": 16, "max_length": 768, "save_steps": 50},
    }

    def validate(self) -> None:
        super().validate()
        for name in ("epochs", "batch_size", "grad_accum", "max_length", "save_steps"):
            self._require(getattr(self, name) >= 1, name, "an integer >= 1")
        self._require(self.learning_rate > 0, "learning_rate", "a number > 0")
        self._require(0.0 < self.eval_fraction < 0.5, "eval_fraction", "a number in (0, 0.5)")
        self._require(0.0 <= self.warmup_ratio < 1.0, "warmup_ratio", "a number in [0, 1)")


@dataclass(frozen=True)
class RewardStageConfig(LoRAStageConfig):
    """Notebook 03: comparisons sampled from the SFT model, then a reward model (QLoRA, TRL's RewardTrainer)."""

    k_samples: int = _field(4, "responses sampled from the SFT model per reward-model prompt (InstructGPT: 4 to 9)")
    heldout_fraction: float = _field(0.2, "share of prompts (with all their pairs) held out for evaluation")
    min_gold_gap: float = _field(0.1, "two answers whose gold scores differ by less than this are a tie, not a "
                                      "comparison (0.1: an answer that failed a quality gate, at most 0.05, ties "
                                      "with every other such answer)")
    base_comparisons: bool = _field(True, "also train on pairs of notebook 01's base-model candidates for the SFT "
                                          "prompts (judged already, so free); held-out pairs stay SFT answers",
                                    (True, False))
    max_base_pairs: int = _field(200, "train on at most this many base-model pairs, a seeded sample (0: all); with "
                                    "more base candidates per prompt they grow as N(N-1)/2 and so does training time")
    swapped_pairs: int = _field(150, "also train on this many relevance pairs: a training prompt's own answer against "
                                     "another prompt's answer, judged for this prompt (0: none)")
    edit_pairs: int = _field(0, "also train on this many edit pairs: a training prompt's answer against a copy "
                                "edited by rule to meet or break one of its constraints (helpers.edits; 0: none)")
    use_margin: bool = _field(False, "add the gold-score difference as a margin to the Bradley-Terry loss", (True, False))
    learning_rate: float = _field(5e-4, "AdamW learning rate for the adapter and the score head")
    epochs: int = _field(2, "passes over the training pairs")
    trainable_layers: int = _field(8, "train the LoRA weights of only the top N layers (0: all), plus the score "
                                      "head; a shorter backward pass, as in PPO and DPO")
    batch_size: int = _field(8, "pairs per optimiser step")
    max_length: int = _field(384, "token limit of a conversation; longer pairs are dropped (and counted)")
    save_steps: int = _field(20, "save a resumable checkpoint every this many steps")
    seed: int = _field(0, "seed for the split, initialisation and data order")

    PROFILE_OVERRIDES: ClassVar[dict[str, dict[str, Any]]] = {
        # tiny's 32-token answers nearly all fail a gate: only exact ties are dropped, so pairs remain.
        "tiny": {"k_samples": 4, "heldout_fraction": 0.25, "min_gold_gap": 0.0, "lora_r": 8, "lora_alpha": 16,
                 "epochs": 1, "trainable_layers": 4, "batch_size": 4, "max_length": 256, "save_steps": 2,
                 "swapped_pairs": 0},  # few tiny answers pass every gate; the unit tests cover relevance pairs
        "gpu": {"k_samples": 6, "epochs": 1, "trainable_layers": 0, "max_base_pairs": 0, "batch_size": 16,
                "max_length": 768, "save_steps": 100},
    }

    def validate(self) -> None:
        super().validate()
        for name in ("epochs", "batch_size", "max_length", "save_steps"):
            self._require(getattr(self, name) >= 1, name, "an integer >= 1")
        self._require(self.k_samples >= 2, "k_samples", "an integer >= 2 (a comparison needs two answers)")
        self._require(0.0 < self.heldout_fraction < 0.5, "heldout_fraction", "a number in (0, 0.5)")
        self._require(0.0 <= self.min_gold_gap < 1.0, "min_gold_gap", "a gold-score difference in [0, 1)")
        self._require(self.trainable_layers >= 0, "trainable_layers", "an integer >= 0 (0: all layers)")
        self._require(self.max_base_pairs >= 0, "max_base_pairs", "an integer >= 0 (0: all)")
        self._require(self.swapped_pairs >= 0, "swapped_pairs", "an integer >= 0 (0: none)")
        self._require(self.edit_pairs >= 0, "edit_pairs", "an integer >= 0 (0: none)")
        self._require(self.learning_rate > 0, "learning_rate", "a number > 0")


@dataclass(frozen=True)
class DPOStageConfig(StageConfig):
    """Notebook 05: Direct Preference Optimisation on the reward model's comparisons (TRL's DPOTrainer, QLoRA).

    The policy starts from the SFT adapter and the reference is a frozen copy of it, as in
    PPO, so the two ways of using preferences start from the same place. Its LoRA shape
    is the SFT adapter's; this config holds the DPO settings only.
    """

    profile: str = _field("cpu", "profile these settings came from", PROFILES)
    beta: float = _field(0.1, "beta: strength of the implicit KL leash to the SFT model (Rafailov et al., 2023)")
    learning_rate: float = _field(3e-4, "AdamW learning rate of the policy adapter")
    epochs: int = _field(1, "passes over the training comparisons")
    batch_size: int = _field(8, "comparisons per optimiser step")
    max_length: int = _field(384, "token limit of prompt + answer; longer ones are truncated")
    max_pairs: int = _field(128, "train on at most this many comparisons (0: all); each costs about as much as "
                                 "a reward-model pair plus a reference pass")
    trainable_layers: int = _field(8, "train the LoRA weights of only the top N layers (0: all), as PPO does")
    save_steps: int = _field(10, "save a resumable checkpoint every this many steps")
    seed: int = _field(0, "seed for data order and the comparison subset")

    PROFILE_OVERRIDES: ClassVar[dict[str, dict[str, Any]]] = {
        "tiny": {"batch_size": 4, "max_length": 256, "save_steps": 2, "trainable_layers": 4},
        "gpu": {"max_pairs": 0, "learning_rate": 5e-5, "epochs": 2, "batch_size": 16, "max_length": 768, "trainable_layers": 0,
                "save_steps": 50},
    }

    def validate(self) -> None:
        for name in ("epochs", "batch_size", "max_length", "save_steps"):
            self._require(getattr(self, name) >= 1, name, "an integer >= 1")
        for name in ("max_pairs", "trainable_layers"):
            self._require(getattr(self, name) >= 0, name, "an integer >= 0 (0: all)")
        self._require(self.beta > 0, "beta", "a number > 0")
        self._require(self.learning_rate > 0, "learning_rate", "a number > 0")


@dataclass(frozen=True)
class PPOStageConfig(StageConfig):
    """Notebook 04: PPO against the reward model with a KL penalty to the SFT model (our own loop, helpers/ppo.py).

    The policy and value adapters start as copies of the SFT and reward adapters, so their
    LoRA shapes come from notebooks 02 and 03; this config holds the RL settings only.
    """

    profile: str = _field("cpu", "profile these settings came from", PROFILES)
    seed: int = _field(0, "seed for prompt order, sampling and minibatch order (reset every iteration)")
    iterations: int = _field(24, "PPO iterations: each samples batch_size episodes, then updates on them")
    batch_size: int = _field(32, "episodes (prompt + sampled response) per iteration")
    advantage: str = _field("rloo", "how each token's advantage is estimated: 'gae' = a value model and GAE "
                                    "(InstructGPT; gpu); 'rloo' = no value model, each answer's KL-penalised return "
                                    "minus the mean of its siblings' (k answers per prompt; Ahmadian et al., 2024; "
                                    "cpu: a baseline that needs no learning, and no value passes)",
                            ("gae", "rloo"))
    samples_per_prompt: int = _field(4, "k: answers sampled per prompt in an iteration (batch_size / k prompts); "
                                        "'rloo' needs k >= 2, its baseline is the other k - 1 answers")
    minibatch_size: int = _field(16, "episodes per gradient step; batch_size / minibatch_size steps per epoch")
    ppo_epochs: int = _field(2, "passes over each iteration's episodes")
    max_new_tokens: int = _field(64, "response token limit during PPO rollouts (cpu: the same as the evaluation's, "
                                     "DataConfig.max_new_tokens, so PPO trains on the length it is judged on)")
    temperature: float = _field(1.0, "sampling temperature T; log-probabilities use logits / T, as sampled")
    learning_rate: float = _field(1e-3, "AdamW learning rate of the policy and value adapters and the value head "
                                        "(cpu: large steps, approx KL ~0.01 an update, so 768 episodes move the policy)")
    warmup_iterations: int = _field(0, "the learning rate rises linearly to learning_rate over this many iterations "
                                    "(0: none); Adam's first steps move every weight by about lr")
    kl_coef: float = _field(0.05, "beta: per-token penalty -beta * (log pi - log pi_ref) (initial value if adaptive)")
    adaptive_kl: bool = _field(False, "adapt beta towards target_kl (Ziegler et al., 2019)", (True, False))
    target_kl: float = _field(6.0, "adaptive KL: target KL to the reference, in nats per response")
    kl_horizon: int = _field(10000, "adaptive KL: horizon H in episodes; beta moves by at most 20 % x batch/H a step")
    gamma: float = _field(1.0, "discount gamma of GAE (1: the score counts fully at every token)")
    lam: float = _field(0.95, "lambda of GAE: bias-variance trade-off of the advantage estimate")
    clip_range: float = _field(0.2, "epsilon: the policy ratio is clipped to [1 - eps, 1 + eps]")
    clip_range_value: float = _field(0.2, "value predictions move at most this far from the old ones per iteration")
    vf_coef: float = _field(0.1, "weight of the value loss in the total loss")
    max_grad_norm: float = _field(1.0, "gradients are clipped to this global norm")
    max_approx_kl: float = _field(0.1, "stop the iteration's update when approx KL(old || new) exceeds this (0: never)")
    no_eos_score: float = _field(-1.0, "score given instead of the reward to a response that never emits EOS")
    length_neutral_reward: bool = _field(True, "take the reward model's taste in length out of PPO's reward: "
                                               "r(x, y) - b * tokens(y), b its reward per token beyond the gold "
                                               "score on notebook 03's answers (helpers.ppo_roles.length_taste; "
                                               "gpu: off, the paper's reward as it is)",
                                         (True, False))
    trainable_layers: int = _field(8, "train the policy and value LoRA weights of only the top N layers (0: all); "
                                   "fewer layers, shorter backward pass")
    ptx_coef: float = _field(0.0, "PPO-ptx: weight of the cross-entropy on SFT demonstrations (0: off)")
    max_bad_minibatches: int = _field(3, "stop with an error after this many minibatches with a non-finite loss")
    save_every: int = _field(1, "save a resumable checkpoint every this many iterations")
    keep_checkpoints: int = _field(2, "how many of the newest checkpoints to keep")
    snapshot_every: int = _field(6, "keep the policy adapter every this many iterations (for notebook 06's curve)")

    PROFILE_OVERRIDES: ClassVar[dict[str, dict[str, Any]]] = {
        "tiny": {"iterations": 2, "batch_size": 4, "minibatch_size": 2, "max_new_tokens": 16, "snapshot_every": 1,
                 "trainable_layers": 4, "learning_rate": 3e-4, "advantage": "gae", "samples_per_prompt": 1},
        "gpu": {"advantage": "gae", "samples_per_prompt": 1, "length_neutral_reward": False,
                "iterations": 100, "trainable_layers": 0, "learning_rate": 1e-4, "batch_size": 64,
                "minibatch_size": 16, "ppo_epochs": 4, "max_new_tokens": 128, "save_every": 5, "snapshot_every": 10},
    }

    def validate(self) -> None:
        for name in ("iterations", "batch_size", "minibatch_size", "ppo_epochs", "max_new_tokens", "kl_horizon",
                     "max_bad_minibatches", "save_every", "keep_checkpoints", "snapshot_every"):
            self._require(getattr(self, name) >= 1, name, "an integer >= 1")
        self._require(self.batch_size % self.minibatch_size == 0, "minibatch_size",
                      f"a divisor of batch_size ({self.batch_size})")
        self._require(self.samples_per_prompt >= 1 and self.batch_size % self.samples_per_prompt == 0,
                      "samples_per_prompt", f"an integer >= 1 that divides batch_size ({self.batch_size})")
        self._require(self.advantage != "rloo" or self.samples_per_prompt >= 2, "samples_per_prompt",
                      "at least 2 with advantage='rloo' (the baseline is the other answers to the same prompt)")
        for name in ("temperature", "learning_rate", "target_kl", "clip_range", "clip_range_value", "max_grad_norm"):
            self._require(getattr(self, name) > 0, name, "a number > 0")
        self._require(self.trainable_layers >= 0, "trainable_layers", "an integer >= 0 (0: all layers)")
        self._require(self.warmup_iterations >= 0, "warmup_iterations", "an integer >= 0 (0: no warm-up)")
        for name in ("kl_coef", "vf_coef", "max_approx_kl", "ptx_coef"):
            self._require(getattr(self, name) >= 0, name, "a number >= 0")
        self._require(0.0 <= self.gamma <= 1.0, "gamma", "a number in [0, 1]")
        self._require(0.0 <= self.lam <= 1.0, "lam", "a number in [0, 1]")

    @property
    def minibatches(self) -> int:
        return self.batch_size // self.minibatch_size


@dataclass(frozen=True)
class EvalStageConfig(StageConfig):
    """Notebook 06: every contender on the held-out evaluation prompts, and the over-optimisation curve."""

    profile: str = _field("cpu", "profile these settings came from", PROFILES)
    answers_per_prompt: int = _field(4, "answers per evaluation prompt from base, SFT, DPO and PPO: their mean "
                                        "per prompt is what gets compared, so more answers narrow the intervals")
    base_answers_per_prompt: int = _field(1, "answers per evaluation prompt from the base model (cpu: 1, the one "
                                             "notebook 01 drew: base trails SFT by far more than one answer's noise)")
    best_of: tuple = _field((4, 16), "the n of the best-of-n contenders: n SFT answers, the reward model picks one")
    subset_prompts: int = _field(24, "evaluation prompts for best-of-n and the PPO checkpoint curve (0: all); "
                                     "these sample many answers, so fewer prompts keep them affordable")
    best_margin: float = _field(0.1, "'PPO (best)' is an earlier checkpoint only if it beats the final policy on the "
                                     "curve by this much (about one standard error of a checkpoint's mean gold on 24 "
                                     "prompts, one answer each); else it is the final policy and nothing is re-sampled")
    score_batch_size: int = _field(16, "answers per forward pass when scoring log-probabilities and rewards")
    seed: int = _field(0, "seed for the sampling of every contender's answers")

    PROFILE_OVERRIDES: ClassVar[dict[str, dict[str, Any]]] = {
        "tiny": {"answers_per_prompt": 2, "best_of": (2, 4), "subset_prompts": 4, "score_batch_size": 8,
                 "best_margin": 0.0},  # tiny keeps the re-sampling path of "PPO (best)" under test
        "gpu": {"subset_prompts": 0, "score_batch_size": 32, "base_answers_per_prompt": 4},
    }

    def validate(self) -> None:
        self._require(self.answers_per_prompt >= 1, "answers_per_prompt", "an integer >= 1")
        self._require(self.base_answers_per_prompt >= 1, "base_answers_per_prompt", "an integer >= 1")
        self._require(self.best_margin >= 0, "best_margin", "a number >= 0 (0: the best checkpoint, whatever its lead)")
        best_of = list(self.best_of)
        self._require(bool(best_of) and all(isinstance(n, int) and n >= 2 for n in best_of), "best_of",
                      "a list of integers >= 2")
        self._require(best_of == sorted(set(best_of)), "best_of", "increasing, without repeats")
        self._require(self.subset_prompts >= 0, "subset_prompts", "an integer >= 0 (0: all)")
        self._require(self.score_batch_size >= 1, "score_batch_size", "an integer >= 1")

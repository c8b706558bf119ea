"""The instruction generator: prompts with verifiable constraints, split for each stage.

InstructGPT (Ouyang et al., 2022, section 3.2) draws three disjoint prompt sets: one
for supervised fine-tuning (SFT), one for reward-model comparisons (RM) and one for
PPO, and evaluates on held-out prompts. We build all of them from one recipe:

    prompt = task template about a topic  +  1-3 verifiable instructions

e.g. "Describe volcanoes briefly. Answer in at most 40 words. Use only lowercase
letters." The instructions come from ``helpers/constraints.py``, so the simulated
labeler (``helpers/labeler.py``) can score any answer, and the topic's keyword stems
let it check that the answer is on topic.

Splits and their guarantees:

- ``sft``, ``rm``, ``ppo`` and ``eval``, produced in that order; ids ``gen-<split>-00000``.
- Evaluation topics are held out: a seeded fraction of the topics (``hold_out_topics``)
  is reserved for ``eval`` and never appears in another split, so evaluation
  measures generalisation to unseen topics, not memorised ones.
- Every prompt text is unique across the whole output.
- Determinism: the same arguments give the same list; each split draws from its
  own generator seeded with ``"<seed>:<split>"``, so resizing one split leaves the
  earlier splits unchanged.
- Constraint kinds are balanced: each row's first constraint is dealt from a
  shuffled deck holding every kind once (refilled when empty), so over any 17
  consecutive rows of a split each kind leads once; further constraints are drawn
  uniformly among the kinds compatible with those chosen. The number of
  constraints is uniform over ``min_constraints..max_constraints``.
- A curriculum: ``kinds`` restricts the deck and the further draws to a subset of
  the kinds (``DataConfig.constraint_kinds``; the ``cpu`` profile uses one, see
  ``helpers.config.CPU_CONSTRAINT_KINDS``), so a small budget meets each kind often.

Topics live in ``data/topics.json``: ``{"topic": "volcanoes", "keywords": ["volcan",
"lava", "magma", ...]}``. The first keyword is the topic noun's stem (it may be a word
fragment such as "volcan"); the others are whole English words, because the
include-a-keyword instructions draw from them ("Include the word \\"lava\\".").
"""

import json
import random
import re
from pathlib import Path
from typing import Sequence

from helpers.constraints import CONSTRAINT_KINDS, describe, sample_constraints

from .schema import SPLITS

TOPICS_PATH = Path(__file__).resolve().parent.parent / "data" / "topics.json"

MAX_DRAWS_PER_ROW = 1000
"""Draws tried for one row before giving up on finding a prompt not yet used."""

TASK_KINDS: dict[str, tuple[str, ...]] = {
    "describe": (
        "Write a short description of {topic}.",
        "Describe {topic} briefly.",
    ),
    "explain": (
        "Explain {topic} to a curious ten-year-old.",
        "Explain what makes {topic} interesting.",
    ),
    "list": (
        "List some interesting facts about {topic}.",
        "Name a few things everyone should know about {topic}.",
    ),
    "advise": (
        "Give a beginner some practical advice about {topic}.",
        "Share a few useful tips related to {topic}.",
    ),
    "compare": (
        "Compare {topic} with {other}.",
        "What do {topic} and {other} have in common?",
    ),
    "story": (
        "Write a very short story about {topic}.",
        "Tell a brief story that involves {topic}.",
    ),
    "poem": (
        "Write a short poem about {topic}.",
        "Compose a few lines of verse about {topic}.",
    ),
    "letter": (
        "Write a short letter to a friend about {topic}.",
        "Write a brief email to a coworker about {topic}.",
    ),
    "persuade": (
        "Convince a friend to take an interest in {topic}.",
        "Make a short persuasive case for caring about {topic}.",
    ),
    "how_to": (
        "Explain step by step how a beginner could learn about {topic}.",
        "How could someone learn more about {topic}? Give practical steps.",
    ),
    "question": (
        "What is the most surprising thing about {topic}?",
        "Why do people find {topic} fascinating?",
    ),
    "opinion": (
        "What is your opinion of {topic}? Answer briefly.",
        "Share your honest thoughts about {topic}.",
    ),
    "history": (
        "Tell me a little about the history of {topic}.",
        "How has our understanding of {topic} changed over time?",
    ),
}
"""Task kind -> prompt templates. ``{topic}`` is the row's topic; ``{other}`` a second topic from the same split."""

KEYWORD_PATTERN = re.compile(r"[a-z]{3,}")


# ---------------------------------------------------------------------------
# Topics
# ---------------------------------------------------------------------------

def validate_topics(topics: list, source: str = "topics") -> list[dict]:
    """Check the topic list and return it; errors name ``source``, the entry index and the field."""
    if not isinstance(topics, list) or not topics:
        raise ValueError(f"{source}: expected a non-empty JSON list of topics")
    seen = set()
    for index, entry in enumerate(topics):
        where = f"{source}: entry {index}"
        if not isinstance(entry, dict) or set(entry) != {"topic", "keywords"}:
            raise ValueError(f"{where}: expected an object with exactly the fields 'topic' and 'keywords'")
        topic, keywords = entry["topic"], entry["keywords"]
        if not isinstance(topic, str) or not topic.strip():
            raise ValueError(f"{where}: field 'topic' must be a non-empty string")
        if topic in seen:
            raise ValueError(f"{where}: field 'topic' repeats {topic!r}")
        seen.add(topic)
        if not isinstance(keywords, list) or not 3 <= len(keywords) <= 6:
            raise ValueError(f"{where} ({topic!r}): field 'keywords' must be a list of 3 to 6 stems")
        for keyword in keywords:
            if not isinstance(keyword, str) or not KEYWORD_PATTERN.fullmatch(keyword):
                raise ValueError(
                    f"{where} ({topic!r}): field 'keywords' holds {keyword!r}; stems are 3+ lowercase letters"
                )
        if len(set(keywords)) != len(keywords):
            raise ValueError(f"{where} ({topic!r}): field 'keywords' repeats a stem")
    return topics


def load_topics(path: str | Path | None = None) -> list[dict]:
    """Read and validate the topic list (default: the repository's ``data/topics.json``)."""
    path = Path(path) if path is not None else TOPICS_PATH
    try:
        topics = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ValueError(f"{path}: cannot read the topic list ({error})") from error
    return validate_topics(topics, str(path))


def hold_out_topics(topics: list[dict], seed: int, eval_topic_fraction: float) -> tuple[list[dict], list[dict]]:
    """Split topics into (eval topics, training topics), a seeded shuffle.

    The eval share is ``round(fraction * len(topics))``, at least one topic when the
    fraction is positive.
    """
    if not 0 <= eval_topic_fraction < 1:
        raise ValueError(f"eval_topic_fraction must be in [0, 1), got {eval_topic_fraction}")
    shuffled = sorted(topics, key=lambda entry: entry["topic"])
    random.Random(f"{seed}:topics").shuffle(shuffled)
    n_eval = round(eval_topic_fraction * len(shuffled))
    if eval_topic_fraction > 0:
        n_eval = max(1, n_eval)
    return shuffled[:n_eval], shuffled[n_eval:]


# ---------------------------------------------------------------------------
# Rows
# ---------------------------------------------------------------------------

def _draw_row(rng: random.Random, pool: list[dict], first_kind: str, n_constraints: int,
              kinds: list[str]) -> dict:
    """Draw one row's content (no id or split yet) from the topics in ``pool``."""
    entry = rng.choice(pool)
    tasks = [name for name in TASK_KINDS if name != "compare" or len(pool) > 1]
    task = rng.choice(tasks)
    template = rng.choice(TASK_KINDS[task])
    other = rng.choice([item for item in pool if item is not entry])["topic"] if "{other}" in template else ""
    keywords = list(entry["keywords"])
    constraints = sample_constraints(rng, n_constraints, topic_words=keywords[1:], first_kind=first_kind, kinds=kinds)
    rng.shuffle(constraints)
    prompt = " ".join([template.format(topic=entry["topic"], other=other)] + [describe(spec) for spec in constraints])
    return {
        "messages": [{"role": "user", "content": prompt}],
        "task": task,
        "topic": entry["topic"],
        "topic_keywords": keywords,
        "constraints": constraints,
    }


def _build_split(
    split: str,
    size: int,
    pool: list[dict],
    rng: random.Random,
    used_prompts: set[str],
    min_constraints: int,
    max_constraints: int,
    kinds: list[str],
) -> list[dict]:
    """Build ``size`` rows for ``split`` whose prompts are not in ``used_prompts`` (which it extends)."""
    rows: list[dict] = []
    deck: list[str] = []
    while len(rows) < size:
        for _ in range(MAX_DRAWS_PER_ROW):
            if not deck:
                deck = list(kinds)
                rng.shuffle(deck)
            content = _draw_row(rng, pool, deck.pop(), rng.randint(min_constraints, max_constraints), kinds)
            prompt = content["messages"][0]["content"]
            if prompt not in used_prompts:
                break
        else:
            raise ValueError(
                f"split {split!r}: found only {len(rows)} unique prompts of the {size} requested "
                f"({len(pool)} topics; {MAX_DRAWS_PER_ROW} draws in a row were repeats); "
                "ask for fewer rows, more constraints per row, or add topics"
            )
        used_prompts.add(prompt)
        rows.append({"id": f"gen-{split}-{len(rows):05d}", "split": split, "source": "generated", **content})
    return rows


def build_instruction_rows(
    split_sizes: dict[str, int],
    seed: int,
    min_constraints: int = 1,
    max_constraints: int = 3,
    eval_topic_fraction: float = 0.2,
    topics: list[dict] | None = None,
    kinds: Sequence[str] | None = None,
) -> list[dict]:
    """Generate prompt rows for the ``sft``, ``rm``, ``ppo`` and ``eval`` splits.

    ``split_sizes`` maps split name -> number of rows (missing splits get none).
    ``kinds`` lists the constraint kinds to draw from (None or empty: all of them).
    ``topics`` defaults to ``load_topics()``. Returns json-serialisable dicts with the
    fields id, split, source, messages, task, topic, topic_keywords and constraints.
    Raises ValueError for unknown splits, bad sizes or counts, or sizes that cannot be
    met with unique prompts.
    """
    unknown = set(split_sizes) - set(SPLITS)
    if unknown:
        raise ValueError(f"unknown split(s) {sorted(unknown)}; splits are {list(SPLITS)}")
    for split, size in split_sizes.items():
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise ValueError(f"split_sizes[{split!r}] must be a non-negative int, got {size!r}")
    if not 1 <= min_constraints <= max_constraints:
        raise ValueError(f"need 1 <= min_constraints <= max_constraints, got {min_constraints} and {max_constraints}")
    kinds = list(kinds) if kinds else list(CONSTRAINT_KINDS)
    unknown_kinds = [name for name in kinds if name not in CONSTRAINT_KINDS]
    if unknown_kinds or len(set(kinds)) != len(kinds):
        raise ValueError(f"kinds {kinds}: expected distinct constraint kinds from {', '.join(CONSTRAINT_KINDS)}")
    topics = load_topics() if topics is None else validate_topics(topics)
    eval_topics, train_topics = hold_out_topics(topics, seed, eval_topic_fraction)

    rows: list[dict] = []
    used_prompts: set[str] = set()
    for split in SPLITS:
        size = split_sizes.get(split, 0)
        if size == 0:
            continue
        pool = eval_topics if split == "eval" else train_topics
        if not pool:
            raise ValueError(
                f"split {split!r} needs topics but none are left for it "
                f"({len(eval_topics)} eval and {len(train_topics)} training topics; "
                f"eval_topic_fraction={eval_topic_fraction})"
            )
        rng = random.Random(f"{seed}:{split}")
        rows += _build_split(split, size, pool, rng, used_prompts, min_constraints, max_constraints, kinds)
    return rows

"""The simulated labeler: a deterministic gold score standing in for human labelers.

InstructGPT (Ouyang et al., 2022) collects human rankings of answers, trains a reward
model on them, and reports how often humans prefer the tuned policy. A workbook
cannot hire labelers, so this module plays their part for prompts built by
``helpers/instructions.py``: every such prompt carries verifiable constraints
(``helpers/constraints.py``) and the labeler checks them. Its score is the "gold"
reward: it can rank answers into preference pairs for the reward model (the
labelers' job in the paper) and measure the policy. PPO itself should optimise the
learned reward model, as in the paper, so that over-optimising that model shows up
as a gap between reward and gold score.

The rulebook
============

Score. ``score = (constraints satisfied) / (constraints in the row)``, in [0, 1].

Gates. Checking constraints alone invites reward hacking: "Volcano." meets "at most
40 words" and "use only lowercase letters" while answering nothing. So five quality
gates are checked too; if any gate fails the score is multiplied by
``GATE_FACTOR`` (0.05), so a gated answer scores at most 0.05 whatever it satisfies.

1. ``nonempty``: the answer holds a non-whitespace character.
2. ``substantive``: the answer has at least ``MIN_WORDS`` (5) words, counted with
   the rule of ``helpers.constraints.words`` (JSON keys and values count as words).
3. ``on_topic``: the lowercased answer contains one of the row's ``topic_keywords``
   at the start of a word (stems: "volcan" matches "volcanic" and "volcanoes").
   The whole text is searched, so a JSON answer's keys and values both count.
   Deliberate deviation from plain substring matching: requiring a word start
   stops short stems from matching inside unrelated words ("cat" in "education").
4. ``not_repetitive``: fails on degenerate repetition, any of:
   a) an answer of ``NGRAM_MIN_WORDS`` (20) or more words whose share of distinct
      word 3-grams is below ``MIN_DISTINCT_NGRAM_SHARE`` (0.5); normal prose sits
      above 0.9;
   b) the same line (a line holding a word; case and surrounding whitespace
      ignored) appearing ``MAX_LINE_REPEATS`` (3) or more times;
   c) one word repeated ``MAX_WORD_RUN`` (4) or more times in a row ("very very very very").
5. ``finished``: fails when the answer was cut off. With ``truncated=True`` (the
   caller knows generation hit its token limit without an end-of-sequence token)
   it fails whatever the text. Otherwise (``truncated`` False or None: a model can
   also stop early on its own) the text decides: the last non-empty line must not
   end mid-sentence, i.e. in a letter, a digit, ``,`` ``:`` ``;`` ``-`` or an
   opening bracket ``( [ {``. Four endings are accepted anyway: the last line is a
   bullet or numbered list item; the last line ends with ``}`` (a JSON object
   closes) or with three backticks (a code fence closes); the answer ends with a
   letter's sign-off (a last line of at most ``MAX_SIGNATURE_WORDS`` (3) words
   below a closing line of at most ``MAX_CLOSING_WORDS`` (4) words that ends in a
   comma, such as "Best wishes," then "Alex"); or
   the row has an ``end_with`` constraint the answer meets.
   Known cost: a poem whose last line has no punctuation counts as unfinished.

Rows. Only rows made by the instruction generator (with ``constraints`` and
``topic_keywords``) can be judged; any other row (an HH-RLHF dialogue, say) raises
ValueError, because its quality has no checkable definition here.
"""

import re
from collections import Counter
from dataclasses import dataclass
from typing import Sequence

from helpers.constraints import CONSTRAINT_KINDS, check, validate, words

GATE_FACTOR = 0.05
"""Multiplier applied to the score when any quality gate fails."""
MIN_WORDS = 5
"""Fewest words a substantive answer has."""
NGRAM_MIN_WORDS = 20
"""Answers this long or longer get the distinct-3-gram test."""
MIN_DISTINCT_NGRAM_SHARE = 0.5
"""Lowest share of distinct word 3-grams a non-repetitive answer has."""
MAX_LINE_REPEATS = 3
"""A line seen this many times marks the answer as repetitive."""
MAX_WORD_RUN = 4
"""A word repeated this many times in a row marks the answer as repetitive."""
MAX_SIGNATURE_WORDS = 3
"""Longest last line still read as the signature under a letter's closing."""
MAX_CLOSING_WORDS = 4
"""Longest closing line ("Best wishes,") before a signature."""

LIST_ITEM = re.compile(r"^\s*(?:[-*\u2022]|\d+[.)])\s+\S")
MID_SENTENCE_END = re.compile(r"[A-Za-z0-9,:;\-(\[{]$")


@dataclass(frozen=True)
class Judgement:
    """The labeler's verdict on one answer."""

    score: float
    """Gold score in [0, 1]: share of constraints met, times GATE_FACTOR if a gate failed."""
    constraints: dict[str, bool]
    """Constraint kind -> satisfied, in the row's order."""
    gates: dict[str, bool]
    """Gate name -> passed, in rulebook order."""

    @property
    def passed_gates(self) -> bool:
        """Whether every quality gate passed."""
        return all(self.gates.values())


# ---------------------------------------------------------------------------
# Gates: each returns True when the answer passes
# ---------------------------------------------------------------------------

def nonempty(response: str) -> bool:
    """Gate 1: the answer is not empty or whitespace only."""
    return bool(response.strip())


def substantive(response: str) -> bool:
    """Gate 2: the answer has at least MIN_WORDS words."""
    return len(words(response)) >= MIN_WORDS


def on_topic(response: str, topic_keywords: Sequence[str]) -> bool:
    """Gate 3: some topic keyword stem starts a word of the (lowercased) answer."""
    text = response.lower()
    return any(re.search(r"(?<![a-z0-9])" + re.escape(stem.lower()), text) for stem in topic_keywords)


def not_repetitive(response: str) -> bool:
    """Gate 4: no low 3-gram diversity, no line seen 3+ times, no word 4+ times in a row."""
    tokens = [token.lower() for token in words(response)]
    if len(tokens) >= NGRAM_MIN_WORDS:
        trigrams = list(zip(tokens, tokens[1:], tokens[2:]))
        if len(set(trigrams)) / len(trigrams) < MIN_DISTINCT_NGRAM_SHARE:
            return False
    lines = [line.strip().lower() for line in response.splitlines() if words(line)]
    if lines and max(Counter(lines).values()) >= MAX_LINE_REPEATS:
        return False
    run = 1
    for previous, current in zip(tokens, tokens[1:]):
        run = run + 1 if current == previous else 1
        if run >= MAX_WORD_RUN:
            return False
    return True


def _ends_with_sign_off(lines: list[str]) -> bool:
    """Whether the last two non-empty lines read as a letter's closing and signature."""
    if len(lines) < 2:
        return False
    closing, signature = lines[-2].strip(), lines[-1]
    return (
        closing.endswith(",")
        and 1 <= len(words(closing)) <= MAX_CLOSING_WORDS
        and 1 <= len(words(signature)) <= MAX_SIGNATURE_WORDS
    )


def finished(response: str, constraints: Sequence[dict] = (), *, truncated: bool | None = None) -> bool:
    """Gate 5: the answer was not cut off (see the rulebook for the accepted endings)."""
    if truncated:
        return False
    lines = [line.rstrip() for line in response.splitlines() if line.strip()]
    if not lines:
        return False
    last = lines[-1]
    if LIST_ITEM.match(last) or last.endswith("}") or last.endswith("```") or _ends_with_sign_off(lines):
        return True
    if any(spec["kind"] == "end_with" and check(spec, response) for spec in constraints):
        return True
    return MID_SENTENCE_END.search(last) is None


# ---------------------------------------------------------------------------
# The verdict
# ---------------------------------------------------------------------------

def _generated_row_parts(row: dict) -> tuple[list[dict], list[str]]:
    """Return the row's constraints and topic keywords, or raise if it was not generated."""
    constraints, keywords = row.get("constraints"), row.get("topic_keywords")
    if not constraints or not keywords:
        raise ValueError(
            f"row {row.get('id')!r} has no 'constraints' or 'topic_keywords': the simulated "
            "labeler only judges rows built by the instruction generator (helpers.instructions)"
        )
    kinds = [validate(spec).name for spec in constraints]
    if len(set(kinds)) != len(kinds):
        raise ValueError(f"row {row.get('id')!r} repeats a constraint kind: {kinds}")
    return constraints, keywords


def judge(row: dict, response: str, *, truncated: bool | None = None) -> Judgement:
    """Judge ``response`` to a generated ``row``: constraints met, gates passed, gold score."""
    constraints, keywords = _generated_row_parts(row)
    met = {spec["kind"]: CONSTRAINT_KINDS[spec["kind"]].check(spec, response) for spec in constraints}
    gates = {
        "nonempty": nonempty(response),
        "substantive": substantive(response),
        "on_topic": on_topic(response, keywords),
        "not_repetitive": not_repetitive(response),
        "finished": finished(response, constraints, truncated=truncated),
    }
    score = sum(met.values()) / len(met)
    if not all(gates.values()):
        score *= GATE_FACTOR
    return Judgement(score=score, constraints=met, gates=gates)


def gold_score(row: dict, response: str, *, truncated: bool | None = None) -> float:
    """Return only the gold score of ``judge``."""
    return judge(row, response, truncated=truncated).score


def gold_scores(rows: Sequence[dict], responses: Sequence[str], truncated: Sequence[bool]) -> list[float]:
    """``gold_score`` of each (row, response, truncated) triple: the gold function PPO logs live."""
    return [gold_score(row, response, truncated=cut) for row, response, cut in zip(rows, responses, truncated, strict=True)]

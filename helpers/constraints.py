"""Verifiable instructions: constraints a program can check, in the spirit of IFEval.

InstructGPT (Ouyang et al., 2022) trains on human judgements of how well an answer
follows its instruction. Here we need a judge we can run a million times for free,
so every prompt carries a few *verifiable* instructions ("Answer in at most 40
words.", "Use only lowercase letters.") in the style of IFEval (Zhou et al., 2023,
"Instruction-Following Evaluation for Large Language Models"). The simulated
labeler (``helpers/labeler.py``) scores an answer by how many of them it meets.

A constraint is plain data, a dict such as ``{"kind": "word_count_max", "n": 40}``.
Parameters are named the same way everywhere:

- ``n``: a count (a positive integer);
- ``word``: a keyword or short phrase (a non-empty string);
- ``keys``: a list of JSON keys (non-empty strings, no repeats).

Each kind is one entry of ``CONSTRAINT_KINDS``, a ``ConstraintKind`` holding a
one-line summary, its checker, the instruction sentence shown to the model, a
parameter sampler and a compatibility group. The module-level ``check`` and
``describe`` validate a spec first and raise ``ValueError`` naming the kind and the
field when it is malformed (unknown kind, missing, mistyped or extra field).

Two choices worth knowing: ``json_keys`` asks for *exactly* the listed keys (no
more, no fewer; order free), since "at least" would reward padding; and
``sentence_count_max`` also needs at least one sentence, so an empty answer does
not meet "at most 3 sentences".

Counting rules (deliberately simple, so a reader can predict every verdict):

- **Words** are the tokens of ``WORD_PATTERN``: runs of ASCII letters and digits,
  joined by inner apostrophes ("don't" is one word, "state-of-the-art" is four,
  "3.5" is two). Punctuation, markdown and JSON braces are not words.
- **Sentences** end at a run of ``.``, ``!`` or ``?`` followed by whitespace or the
  end of the text, and at every line break. A piece counts only if it holds a
  word, so blank lines and a lone "---" count as nothing. Abbreviations such as
  "e.g." end a sentence too: a known simplification.
- **Paragraphs** are the pieces of text between blank lines (lines holding only
  whitespace) that contain something other than whitespace.
- **Bullets** are lines that start, after optional indentation, with "- " or "* ".
- Keyword matching is case-insensitive and whole-word: the word may not be
  glued to a letter or digit on either side ("art" is not found in "start").

Compatibility: a row never holds two kinds of the same ``group`` ("case": at most
one of lowercase/uppercase; "format": at most one of json_keys, bullet_count,
paragraph_count, quotation), never a pair listed in ``CONFLICTS`` (e.g. a JSON
answer cannot also start with a chosen word or end with a postscript) and never
parameters that contradict each other (``word_count_min`` must sit at least
``MIN_WORD_WINDOW`` words below ``word_count_max``; an excluded word may not be a
word another constraint asks for). ``conflict_reason`` says which rule a list breaks.

Deviation from IFEval: kinds and wording are our own, chosen so that answers stay
short (a 135M-parameter model writes them) and each check is a few lines of code.
"""

import json
import random
import re
from dataclasses import dataclass
from typing import Callable, Sequence

WORD_PATTERN = re.compile(r"[A-Za-z0-9]+(?:'[A-Za-z0-9]+)*")
SENTENCE_END = re.compile(r"[.!?]+(?=\s|$)|\n")
BLANK_LINE = re.compile(r"\n(?:[ \t]*\n)+")
BULLET_LINE = re.compile(r"^[ \t]*[-*] +\S", re.MULTILINE)
JSON_FENCE = re.compile(r"^```(?:json)?[ \t]*\n(.*)\n[ \t]*```$", re.DOTALL | re.IGNORECASE)
TITLE_PATTERN = re.compile(r"<<[^<>\n]*[A-Za-z0-9][^<>\n]*>>")
POSTSCRIPT_LINE = re.compile(r"^[ \t\"'*_]*p\.[ \t]?s\.", re.IGNORECASE)
QUOTE_PAIRS = (('"', '"'), ("\u201c", "\u201d"))

MIN_WORD_WINDOW = 10
"""Smallest gap allowed between word_count_min and word_count_max in one row."""

EXCLUDABLE_WORDS = ("very", "also", "many", "really", "important", "great", "often", "because", "things", "just")
"""Common words a chat model uses without thinking; avoiding one takes attention."""

START_WORDS = ("Today", "Imagine", "Here", "Sure", "Well", "Honestly", "First")
END_PHRASES = ("Thank you", "Good luck", "That is all", "Enjoy", "The end")
JSON_KEY_POOL = ("topic", "summary", "facts", "tip", "example", "question", "answer", "reason", "title", "description")


# ---------------------------------------------------------------------------
# Counting helpers
# ---------------------------------------------------------------------------

def words(text: str) -> list[str]:
    """Return the words of ``text`` under the rule in the module docstring."""
    return WORD_PATTERN.findall(text)


def count_sentences(text: str) -> int:
    """Count sentences: pieces ended by ./!/? (then whitespace or end) or a line break, holding a word."""
    return sum(1 for piece in SENTENCE_END.split(text) if WORD_PATTERN.search(piece))


def paragraphs(text: str) -> list[str]:
    """Split ``text`` on blank lines; return the non-blank pieces, stripped."""
    return [piece.strip() for piece in BLANK_LINE.split(text) if piece.strip()]


def _phrase_pattern(phrase: str) -> str:
    """Regex source for ``phrase`` as whole words, allowing any whitespace between its words."""
    return r"\s+".join(re.escape(part) for part in phrase.split())


def count_phrase(text: str, phrase: str) -> int:
    """Count whole-word, case-insensitive occurrences of ``phrase`` in ``text``."""
    pattern = r"(?<![A-Za-z0-9])" + _phrase_pattern(phrase) + r"(?![A-Za-z0-9])"
    return len(re.findall(pattern, text, re.IGNORECASE))


def parse_json_answer(text: str):
    """Parse ``text`` as JSON, optionally wrapped in a ```json fence; return None if it does not parse."""
    body = text.strip()
    fenced = JSON_FENCE.match(body)
    if fenced:
        body = fenced.group(1)
    try:
        return json.loads(body)
    except ValueError:
        return None


# ---------------------------------------------------------------------------
# Checkers: (spec, response) -> bool, for a spec already validated (see ConstraintKind)
# ---------------------------------------------------------------------------

def _check_word_count_max(spec, response):
    return len(words(response)) <= spec["n"]


def _check_word_count_min(spec, response):
    return len(words(response)) >= spec["n"]


def _check_lowercase(spec, response):
    return any(ch.isalpha() for ch in response) and not any(ch.isupper() for ch in response)


def _check_uppercase(spec, response):
    return any(ch.isalpha() for ch in response) and not any(ch.islower() for ch in response)


def _check_include_keyword(spec, response):
    return count_phrase(response, spec["word"]) >= 1


def _check_exclude_keyword(spec, response):
    return count_phrase(response, spec["word"]) == 0


def _check_keyword_frequency(spec, response):
    return count_phrase(response, spec["word"]) >= spec["n"]


def _check_bullet_count(spec, response):
    return len(BULLET_LINE.findall(response)) == spec["n"]


def _check_sentence_count_max(spec, response):
    return 1 <= count_sentences(response) <= spec["n"]


def _check_start_with(spec, response):
    body = re.sub(r"^[^A-Za-z0-9]+", "", response)
    pattern = _phrase_pattern(spec["word"]) + r"(?![A-Za-z0-9])"
    return re.match(pattern, body, re.IGNORECASE) is not None


def _check_end_with(spec, response):
    body = re.sub(r"[^A-Za-z0-9]+$", "", response)
    phrase = re.sub(r"[^A-Za-z0-9]+$", "", spec["word"])
    pattern = r"(?<![A-Za-z0-9])" + _phrase_pattern(phrase) + r"$"
    return re.search(pattern, body, re.IGNORECASE) is not None


def _check_no_commas(spec, response):
    return "," not in response


def _check_json_keys(spec, response):
    parsed = parse_json_answer(response)
    return isinstance(parsed, dict) and set(parsed) == set(spec["keys"])


def _check_paragraph_count(spec, response):
    return len(paragraphs(response)) == spec["n"]


def _check_postscript(spec, response):
    lines = [line for line in response.splitlines() if line.strip()]
    # The P.S. must come after a main answer: its line may not be the first one.
    return any(POSTSCRIPT_LINE.match(line) for line in lines[1:])


def _check_quotation(spec, response):
    body = response.strip()
    return len(body) >= 2 and any(body.startswith(a) and body.endswith(b) for a, b in QUOTE_PAIRS)


def _check_title(spec, response):
    return TITLE_PATTERN.search(response) is not None


# ---------------------------------------------------------------------------
# Samplers: (rng, topic_words) -> spec. topic_words are whole words about the row's topic.
# ---------------------------------------------------------------------------

def _sample_n(kind, low, high, step=1):
    """Sampler for a kind whose only parameter is a count n in low..high."""
    def sample(rng, topic_words):
        return {"kind": kind, "n": rng.randrange(low, high + 1, step)}
    return sample


def _sample_flag(kind):
    """Sampler for a kind without parameters."""
    def sample(rng, topic_words):
        return {"kind": kind}
    return sample


def _sample_word_from(kind, pool):
    """Sampler for a kind whose word comes from a fixed pool."""
    def sample(rng, topic_words):
        return {"kind": kind, "word": rng.choice(pool)}
    return sample


def _sample_topic_word(rng, topic_words):
    if not topic_words:
        raise ValueError("include_keyword needs topic_words to draw the keyword from")
    return {"kind": "include_keyword", "word": rng.choice(list(topic_words))}


def _sample_keyword_frequency(rng, topic_words):
    if not topic_words:
        raise ValueError("keyword_frequency needs topic_words to draw the keyword from")
    return {"kind": "keyword_frequency", "word": rng.choice(list(topic_words)), "n": rng.randint(2, 3)}


def _sample_json_keys(rng, topic_words):
    return {"kind": "json_keys", "keys": rng.sample(JSON_KEY_POOL, rng.randint(2, 3))}


def _quoted_keys(keys):
    return ", ".join(f'"{key}"' for key in keys)


# ---------------------------------------------------------------------------
# The registry
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class ConstraintKind:
    """One kind of verifiable instruction and everything needed to use it."""

    name: str
    """Registry key, the ``kind`` field of a spec."""
    summary: str
    """One line saying what the constraint demands."""
    fields: tuple[str, ...]
    """Parameter names the spec must carry (from ``FIELD_TYPES``)."""
    group: str | None
    """Compatibility group: a row holds at most one kind per group."""
    check: Callable[[dict, str], bool]
    """``check(spec, response)``: whether the response satisfies the spec."""
    describe: Callable[[dict], str]
    """``describe(spec)``: the instruction sentence appended to the prompt."""
    sample: Callable[[random.Random, Sequence[str]], dict]
    """``sample(rng, topic_words)``: a spec with random parameters."""


_KINDS = [
    ConstraintKind(
        "word_count_max", "at most n words", ("n",), None, _check_word_count_max,
        lambda s: f"Answer in at most {s['n']} words.",
        _sample_n("word_count_max", 20, 80, step=5),
    ),
    ConstraintKind(
        "word_count_min", "at least n words", ("n",), None, _check_word_count_min,
        lambda s: f"Answer in at least {s['n']} words.",
        _sample_n("word_count_min", 20, 60, step=5),
    ),
    ConstraintKind(
        "lowercase", "no uppercase letter anywhere (and at least one letter)", (), "case", _check_lowercase,
        lambda s: "Use only lowercase letters, with no capital letters at all.",
        _sample_flag("lowercase"),
    ),
    ConstraintKind(
        "uppercase", "no lowercase letter anywhere (and at least one letter)", (), "case", _check_uppercase,
        lambda s: "Write your entire answer in capital letters.",
        _sample_flag("uppercase"),
    ),
    ConstraintKind(
        "include_keyword", "the word appears (whole word, any case)", ("word",), None, _check_include_keyword,
        lambda s: f"Include the word \"{s['word']}\".",
        _sample_topic_word,
    ),
    ConstraintKind(
        "exclude_keyword", "the word never appears (whole word, any case)", ("word",), None, _check_exclude_keyword,
        lambda s: f"Do not use the word \"{s['word']}\".",
        _sample_word_from("exclude_keyword", EXCLUDABLE_WORDS),
    ),
    ConstraintKind(
        "keyword_frequency", "the word appears at least n times", ("word", "n"), None, _check_keyword_frequency,
        lambda s: f"Use the word \"{s['word']}\" at least {s['n']} times.",
        _sample_keyword_frequency,
    ),
    ConstraintKind(
        "bullet_count", "exactly n bullet lines starting with '- ' or '* '", ("n",), "format", _check_bullet_count,
        lambda s: f"Format the answer as exactly {s['n']} bullet points, each on its own line starting with \"- \".",
        _sample_n("bullet_count", 2, 5),
    ),
    ConstraintKind(
        "sentence_count_max", "between 1 and n sentences", ("n",), None, _check_sentence_count_max,
        lambda s: f"Use at most {s['n']} sentences.",
        _sample_n("sentence_count_max", 2, 5),
    ),
    ConstraintKind(
        "start_with", "the first word is this word (leading punctuation ignored)", ("word",), None, _check_start_with,
        lambda s: f"Start your answer with the word \"{s['word']}\".",
        _sample_word_from("start_with", START_WORDS),
    ),
    ConstraintKind(
        "end_with", "the answer ends with this phrase (trailing punctuation ignored)", ("word",), None, _check_end_with,
        lambda s: f"End your answer with the exact phrase \"{s['word']}\".",
        _sample_word_from("end_with", END_PHRASES),
    ),
    ConstraintKind(
        "no_commas", "no ',' character", (), None, _check_no_commas,
        lambda s: "Do not use any commas.",
        _sample_flag("no_commas"),
    ),
    ConstraintKind(
        "json_keys", "the answer is a JSON object (fence allowed) with exactly these keys", ("keys",), "format",
        _check_json_keys,
        lambda s: f"Answer only with a JSON object that has exactly these keys: {_quoted_keys(s['keys'])}.",
        _sample_json_keys,
    ),
    ConstraintKind(
        "paragraph_count", "exactly n paragraphs separated by blank lines", ("n",), "format", _check_paragraph_count,
        lambda s: f"Write exactly {s['n']} paragraphs, separated by blank lines.",
        _sample_n("paragraph_count", 2, 3),
    ),
    ConstraintKind(
        "postscript", "a line after the first starts with 'P.S.'", (), None, _check_postscript,
        lambda s: "End with a postscript on its own line starting with \"P.S.\".",
        _sample_flag("postscript"),
    ),
    ConstraintKind(
        "quotation", "the whole answer is wrapped in double quotes", (), "format", _check_quotation,
        lambda s: "Wrap your entire answer in double quotation marks.",
        _sample_flag("quotation"),
    ),
    ConstraintKind(
        "title", "a title in double angle brackets, <<like this>>", (), None, _check_title,
        lambda s: "Give your answer a title wrapped in double angle brackets, like <<title>>.",
        _sample_flag("title"),
    ),
]

CONSTRAINT_KINDS: dict[str, ConstraintKind] = {kind.name: kind for kind in _KINDS}
"""Every constraint kind by name, in a fixed order."""

CONFLICTS: dict[frozenset[str], str] = {
    frozenset(pair): reason
    for pair, reason in [
        (("json_keys", "uppercase"), "JSON keys are lowercase"),
        (("json_keys", "no_commas"), "a JSON object with several keys needs commas"),
        (("json_keys", "start_with"), "a JSON answer starts with '{'"),
        (("json_keys", "end_with"), "a JSON answer ends with '}'"),
        (("json_keys", "postscript"), "a JSON answer has no room for a postscript"),
        (("json_keys", "sentence_count_max"), "a JSON answer has no sentences to count"),
        (("json_keys", "title"), "a JSON answer has no room for a title"),
        (("postscript", "end_with"), "both decide how the answer ends"),
        (("postscript", "paragraph_count"), "a postscript changes the paragraph count"),
        (("postscript", "sentence_count_max"), "a postscript adds sentences"),
        (("title", "start_with"), "a leading title would be the first word"),
        (("title", "paragraph_count"), "a title line changes the paragraph count"),
        (("title", "sentence_count_max"), "a title line counts as a sentence"),
        (("bullet_count", "sentence_count_max"), "every bullet line counts as a sentence"),
    ]
}
"""Pairs of kinds that may not share a row, with the reason."""


# ---------------------------------------------------------------------------
# Validation and the public entry points
# ---------------------------------------------------------------------------

def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _is_phrase(value) -> bool:
    return isinstance(value, str) and WORD_PATTERN.search(value) is not None


def _is_key_list(value) -> bool:
    return (
        isinstance(value, list)
        and len(value) >= 1
        and all(isinstance(key, str) and key for key in value)
        and len(set(value)) == len(value)
    )


FIELD_TYPES: dict[str, tuple[Callable[[object], bool], str]] = {
    "n": (_is_count, "a positive int"),
    "word": (_is_phrase, "a non-empty string holding a word"),
    "keys": (_is_key_list, "a non-empty list of distinct non-empty strings"),
}
"""Parameter name -> (validator, what a valid value is)."""


def validate(spec: dict) -> ConstraintKind:
    """Check that ``spec`` is a well-formed constraint and return its kind.

    Raises ValueError naming the kind and the offending field when the kind is
    unknown, a parameter is missing or of the wrong type, or an extra field is present.
    """
    if not isinstance(spec, dict):
        raise ValueError(f"a constraint must be a dict with a 'kind' field, got {spec!r}")
    name = spec.get("kind")
    if not isinstance(name, str) or name not in CONSTRAINT_KINDS:
        raise ValueError(f"unknown constraint kind {name!r}; known kinds: {', '.join(CONSTRAINT_KINDS)}")
    kind = CONSTRAINT_KINDS[name]
    for field in kind.fields:
        is_valid, expected = FIELD_TYPES[field]
        if field not in spec:
            raise ValueError(f"constraint {name!r} needs field {field!r} ({expected})")
        if not is_valid(spec[field]):
            raise ValueError(f"constraint {name!r} field {field!r} must be {expected}, got {spec[field]!r}")
    extra = set(spec) - {"kind", *kind.fields}
    if extra:
        raise ValueError(f"constraint {name!r} has unexpected field(s) {sorted(extra)}; it takes {list(kind.fields)}")
    return kind


def check(spec: dict, response: str) -> bool:
    """Return whether ``response`` satisfies the constraint ``spec``."""
    return validate(spec).check(spec, response)


def describe(spec: dict) -> str:
    """Return the instruction sentence for ``spec``, as appended to a prompt."""
    return validate(spec).describe(spec)


def sample_constraint(kind: str, rng: random.Random, topic_words: Sequence[str] = ()) -> dict:
    """Draw a spec of ``kind`` with random parameters (keywords come from ``topic_words``)."""
    if kind not in CONSTRAINT_KINDS:
        raise ValueError(f"unknown constraint kind {kind!r}; known kinds: {', '.join(CONSTRAINT_KINDS)}")
    return CONSTRAINT_KINDS[kind].sample(rng, topic_words)


# ---------------------------------------------------------------------------
# Compatibility
# ---------------------------------------------------------------------------

def kinds_conflict_reason(kinds: Sequence[str]) -> str | None:
    """Return why these kinds cannot share a row (duplicates, group clash, listed conflict), or None."""
    for name in kinds:
        if name not in CONSTRAINT_KINDS:
            raise ValueError(f"unknown constraint kind {name!r}; known kinds: {', '.join(CONSTRAINT_KINDS)}")
    if len(set(kinds)) != len(kinds):
        return f"duplicate kinds in {list(kinds)}"
    seen_groups: dict[str, str] = {}
    for name in kinds:
        group = CONSTRAINT_KINDS[name].group
        if group is not None and group in seen_groups:
            return f"{seen_groups[group]!r} and {name!r} are both {group!r} constraints"
        if group is not None:
            seen_groups[group] = name
    for i, first in enumerate(kinds):
        for second in kinds[i + 1:]:
            reason = CONFLICTS.get(frozenset((first, second)))
            if reason:
                return f"{first!r} conflicts with {second!r}: {reason}"
    return None


def compatible_kinds(kinds: Sequence[str]) -> bool:
    """Return whether these constraint kinds may appear together in one row."""
    return kinds_conflict_reason(kinds) is None


def conflict_reason(constraints: Sequence[dict]) -> str | None:
    """Return why these specs cannot share a row, or None when they can.

    Checks the kind-level rules of ``kinds_conflict_reason`` and then parameters:
    word_count_min must be at least ``MIN_WORD_WINDOW`` below word_count_max, the
    excluded word may not be a word any other constraint asks for (or a JSON key),
    include_keyword and keyword_frequency may not name the same word, and
    sentence_count_max may not be below paragraph_count.
    """
    for spec in constraints:
        validate(spec)
    reason = kinds_conflict_reason([spec["kind"] for spec in constraints])
    if reason:
        return reason
    by_kind = {spec["kind"]: spec for spec in constraints}
    low, high = by_kind.get("word_count_min"), by_kind.get("word_count_max")
    if low and high and high["n"] - low["n"] < MIN_WORD_WINDOW:
        return f"word_count_min {low['n']} must be at least {MIN_WORD_WINDOW} below word_count_max {high['n']}"
    excluded = by_kind.get("exclude_keyword")
    if excluded:
        asked = [spec["word"] for spec in constraints if spec["kind"] != "exclude_keyword" and "word" in spec]
        asked += [key for spec in constraints for key in spec.get("keys", [])]
        for text in asked:
            if count_phrase(text.replace("_", " "), excluded["word"]):
                return f"excluded word {excluded['word']!r} is needed by {text!r}"
    included, frequent = by_kind.get("include_keyword"), by_kind.get("keyword_frequency")
    if included and frequent and included["word"].lower() == frequent["word"].lower():
        return f"include_keyword and keyword_frequency both ask for {included['word']!r}"
    sentences, paras = by_kind.get("sentence_count_max"), by_kind.get("paragraph_count")
    if sentences and paras and sentences["n"] < paras["n"]:
        return f"{paras['n']} paragraphs need more than {sentences['n']} sentences"
    return None


def compatible(constraints: Sequence[dict]) -> bool:
    """Return whether these specs may appear together in one row."""
    return conflict_reason(constraints) is None


def sample_constraints(
    rng: random.Random,
    count: int,
    topic_words: Sequence[str],
    first_kind: str | None = None,
    max_tries: int = 50,
    kinds: Sequence[str] | None = None,
) -> list[dict]:
    """Draw ``count`` mutually compatible specs.

    The first kind is ``first_kind`` when given (the generator deals it from a deck
    so every kind appears often); each further kind is drawn uniformly among the
    kinds compatible with those already chosen, from ``kinds`` (default: every kind),
    and its parameters are redrawn until they fit. Raises ValueError when no
    compatible set is found.
    """
    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    pool = list(CONSTRAINT_KINDS) if kinds is None else list(kinds)
    for name in pool:
        if name not in CONSTRAINT_KINDS:
            raise ValueError(f"unknown constraint kind {name!r}; known kinds: {', '.join(CONSTRAINT_KINDS)}")
    for _ in range(max_tries):
        chosen: list[dict] = []
        if first_kind is not None:
            chosen.append(sample_constraint(first_kind, rng, topic_words))
        while len(chosen) < count:
            taken = [spec["kind"] for spec in chosen]
            options = [name for name in pool if compatible_kinds(taken + [name])]
            if not options:
                break
            name = rng.choice(options)
            for _ in range(max_tries):
                candidate = sample_constraint(name, rng, topic_words)
                if compatible(chosen + [candidate]):
                    chosen.append(candidate)
                    break
            else:
                break
        if len(chosen) == count:
            return chosen
    raise ValueError(f"could not draw {count} compatible constraints (first kind {first_kind!r})")

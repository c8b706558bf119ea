"""Constraint edits: rewrite an answer by rule so that it meets, or breaks, one constraint.

Why. Two answers the SFT model sampled for one prompt differ in many ways at once (length,
wording, topic, format), so a reward model trained on such pairs learns "meets the
constraints" slowly: in notebook 03 it ranks pairs decided by the constraints barely better
than chance. An *edit pair* isolates that cue: an answer and a copy that differs only in
meeting one constraint ("Use only lowercase letters": the answer and its lowercased copy).
This is counterfactual data augmentation (Kaushik et al., 2020, "Learning the Difference
that Makes a Difference with Counterfactually-Augmented Data"), with the rule playing the
annotator who makes the minimal edit; the simulated labeler still decides which side wins.

Both directions exist, ``meet`` (fix a constraint the answer missed) and ``violate`` (break
one it met), so an edit's own traces (an added "P.S." line, a lowercased text) win for the
prompts that ask for them and lose for the others: the reward model has to read the prompt.

The same edits also write demonstrations (``edit_answer``, used by notebook 01): a sampled answer
that fell short, its cut-off tail trimmed and each missed constraint met by rule, is what a labeler
asked to fix it would hand back (InstructGPT's demonstrations were written by labelers).

Each function returns the edited text, or None when no simple rule applies (adding content,
as "at least 60 words" or "use the word 'canvas' 3 times" would need, is left to the model).
The edits are deliberately plain: they change the constraint's cue and as little else as a
regular expression can.
"""

from __future__ import annotations

import json
import re

from .constraints import (BULLET_LINE, CONSTRAINT_KINDS, JSON_FENCE, POSTSCRIPT_LINE, QUOTE_PAIRS, SENTENCE_END,
                          TITLE_PATTERN, WORD_PATTERN, _phrase_pattern, count_sentences, parse_json_answer, words)

POSTSCRIPT_TEXT = "P.S. Thank you for reading."
"""The postscript ``meet`` appends."""


def _sentences(text: str) -> list[str]:
    """The text cut after each sentence end (``SENTENCE_END``), pieces kept whole so that ''.join gives the text."""
    pieces, start = [], 0
    for match in SENTENCE_END.finditer(text):
        pieces.append(text[start:match.end()])
        start = match.end()
    if text[start:].strip():
        pieces.append(text[start:])
    return pieces


def _first_sentences(text: str, keep) -> str | None:
    """The longest run of whole leading sentences for which ``keep(prefix)`` holds, or None if not even one."""
    prefix, best = "", None
    for piece in _sentences(text):
        prefix += piece
        if not WORD_PATTERN.search(piece):
            continue
        if not keep(prefix):
            break
        best = prefix.rstrip()
    return best


def _without_phrase(text: str, phrase: str) -> str:
    """``text`` with every whole-word, case-insensitive occurrence of ``phrase`` removed and spaces tidied."""
    pattern = r"(?<![A-Za-z0-9])" + _phrase_pattern(phrase) + r"(?![A-Za-z0-9])"
    edited = re.sub(pattern, "", text, flags=re.IGNORECASE)
    edited = re.sub(r"[ \t]{2,}", " ", re.sub(r"[ \t]+([,.!?;:])", r"\1", edited)).strip()
    return edited[:1].upper() + edited[1:] if text[:1].isupper() else edited


def _in_case_of(body: str, text: str) -> str:
    """``text`` lowercased for an all-lowercase ``body``, uppercased for an all-capitals one, else as it is."""
    if not any(ch.isupper() for ch in body):
        return text.lower()
    if not any(ch.islower() for ch in body):
        return text.upper()
    return text


def _sentence_case(text: str) -> str:
    """Lowercase text with a capital at its start and after each sentence end."""
    return re.sub(r"(^\s*|[.!?]\s+|\n\s*)([a-z])", lambda m: m.group(1) + m.group(2).upper(), text.lower())


def meet(spec: dict, response: str) -> str | None:
    """A copy of ``response`` edited so it meets ``spec``; None if it meets it already or no rule applies."""
    kind, check = spec["kind"], CONSTRAINT_KINDS[spec["kind"]].check
    if check(spec, response):
        return None
    body = response.strip()
    if not words(body):
        return None
    lead = body[:1].lower() + body[1:] if body[1:2].islower() else body  # "The sea" -> "the sea"; "I", "NASA" kept
    edited = {
        "lowercase": lambda: body.lower(),
        "uppercase": lambda: body.upper(),
        "no_commas": lambda: body.replace(",", ""),
        "exclude_keyword": lambda: _without_phrase(body, spec["word"]),
        "start_with": lambda: f"{_in_case_of(body, spec['word'])} {lead}",
        "end_with": lambda: f"{body} {_in_case_of(body, spec['word'])}.",
        "postscript": lambda: f"{body}\n\n{_in_case_of(body, POSTSCRIPT_TEXT)}",
        "quotation": lambda: f"\"{body}\"",
        "title": lambda: f"<<{_in_case_of(body, ' '.join(words(body)[:4]).title())}>>\n\n{body}",
        "word_count_max": lambda: _first_sentences(body, lambda text: len(words(text)) <= spec["n"]),
        "sentence_count_max": lambda: _first_sentences(body, lambda text: count_sentences(text) <= spec["n"]),
    }.get(kind)
    result = edited() if edited else None
    return result if result is not None and check(spec, result) else None


WHOLE_SENTENCE_END = re.compile(r"[.!?]+(?=\s|$)")
"""The end of a whole sentence: what ``finish`` cuts after."""


def finish(response: str) -> str | None:
    """A cut-off answer ended after its last whole sentence; None if not even one sentence is whole."""
    body = response.strip()
    ends = [match.end() for match in WHOLE_SENTENCE_END.finditer(body)]
    return body[: ends[-1]] if ends else None


def edit_answer(constraints: list[dict], response: str, *, truncated: bool) -> str | None:
    """A sampled answer fixed by rule: a cut-off one ended after its last whole sentence (``finish``), then
    each constraint it misses met (``meet``), in the row's order. None when no edit applied.

    Later edits can undo earlier ones (a title adds words an "at most 40 words" answer may not have
    room for): the labeler judges the result, and only what it scores well becomes a demonstration.
    """
    text = finish(response) if truncated else response.strip()
    if text is None:
        return None
    for spec in constraints:
        text = meet(spec, text) or text
    return text if (truncated or text != response.strip()) and words(text) else None


def violate(spec: dict, response: str) -> str | None:
    """A copy of ``response`` edited so it no longer meets ``spec``; None if it misses it already or no rule applies."""
    kind, check = spec["kind"], CONSTRAINT_KINDS[spec["kind"]].check
    if not check(spec, response):
        return None
    body = response.strip()
    if not words(body):
        return None

    def drop_lines(pattern):
        return "\n".join(line for line in body.splitlines() if not pattern.match(line)).rstrip()

    def drop_last_bullet():
        lines = body.splitlines()
        last = max(i for i, line in enumerate(lines) if BULLET_LINE.match(line))
        return "\n".join(lines[:last] + lines[last + 1:]).rstrip()

    def unquote():
        for left, right in QUOTE_PAIRS:
            inner = body[len(left):-len(right)]
            if body.startswith(left) and body.endswith(right) and left not in inner and right not in inner:
                return inner.strip()
        return None  # '"Lava" is hot and "ash"' is not one quotation

    def drop_first_word():
        match = re.match(r"([^A-Za-z0-9]*)" + _phrase_pattern(spec["word"]) + r"(?![A-Za-z0-9'])[ \t,;:!.-]*", body,
                         re.IGNORECASE)  # group 1: an opening quote or bullet marker, kept
        if match is None:
            return None
        rest = body[match.end():]
        return match.group(1) + rest[:1].upper() + rest[1:]

    def drop_json_key():
        parsed = parse_json_answer(body)
        text = json.dumps({k: v for k, v in list(parsed.items())[:-1]}, indent=2, ensure_ascii=False)
        return f"```json\n{text}\n```" if JSON_FENCE.match(body) else text

    edited = {
        "lowercase": lambda: _sentence_case(body),
        "uppercase": lambda: _sentence_case(body),
        "include_keyword": lambda: _without_phrase(body, spec["word"]),
        "start_with": drop_first_word,
        "end_with": lambda: _first_sentences(body, lambda text: not check(spec, text)),
        "postscript": lambda: drop_lines(POSTSCRIPT_LINE),
        "quotation": unquote,
        "title": lambda: TITLE_PATTERN.sub("", body).strip(),
        "bullet_count": drop_last_bullet,
        "paragraph_count": lambda: re.sub(r"\n(?:[ \t]*\n)+", "\n", body),
        "json_keys": drop_json_key,
        "word_count_min": lambda: _first_sentences(body, lambda text: len(words(text)) < spec["n"]),
    }.get(kind)
    result = edited() if edited else None
    return result if result and not check(spec, result) else None

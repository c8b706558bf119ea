"""Tests for helpers.constraints: every kind's checker, wording, validation, compatibility and sampling."""

import random

import pytest

from helpers.constraints import (
    CONSTRAINT_KINDS,
    END_PHRASES,
    EXCLUDABLE_WORDS,
    JSON_KEY_POOL,
    START_WORDS,
    check,
    compatible,
    compatible_kinds,
    conflict_reason,
    count_sentences,
    describe,
    paragraphs,
    sample_constraint,
    sample_constraints,
    validate,
    words,
)

# kind -> (spec, a response that satisfies it, a response that does not)
CASES = {
    "word_count_max": ({"kind": "word_count_max", "n": 5}, "One two three four five.", "One two three four five six."),
    "word_count_min": ({"kind": "word_count_min", "n": 5}, "one, two, three, four, five", "one two three four"),
    "lowercase": ({"kind": "lowercase"}, "all lower case here.", "Not all lower case."),
    "uppercase": ({"kind": "uppercase"}, "ALL CAPS HERE, 100%!", "ALL CAPS bUT ONE"),
    "include_keyword": ({"kind": "include_keyword", "word": "lava"}, "Hot LAVA flows.", "Lavas glow in a lavalamp."),
    "exclude_keyword": ({"kind": "exclude_keyword", "word": "very"}, "Everything is fine.", "It is Very hot."),
    "keyword_frequency": (
        {"kind": "keyword_frequency", "word": "lava", "n": 2}, "Lava here, lava there.", "Lava once, lavas twice."
    ),
    "bullet_count": ({"kind": "bullet_count", "n": 2}, "Two facts:\n- one\n* two", "- one\n- two\n- three"),
    "sentence_count_max": ({"kind": "sentence_count_max", "n": 2}, "First one. Second one!", "One. Two. Three?"),
    "start_with": ({"kind": "start_with", "word": "Today"}, '"Today, we learn."', "Todays lesson starts today."),
    "end_with": ({"kind": "end_with", "word": "Good luck"}, "Try it out. Good  LUCK!\n", "Good luck with it."),
    "no_commas": ({"kind": "no_commas"}, "No commas here.", "Yes, commas."),
    "json_keys": (
        {"kind": "json_keys", "keys": ["topic", "summary"]},
        '```json\n{"topic": "lava", "summary": "hot rock"}\n```',
        '{"topic": "lava", "summary": "hot rock", "extra": 1}',
    ),
    "paragraph_count": ({"kind": "paragraph_count", "n": 2}, "Para one.\n\nPara two.\n", "Para one.\nStill para one."),
    "postscript": ({"kind": "postscript"}, "Main answer.\n\nP.S. See you soon.", "P.S. This is all there is."),
    "quotation": ({"kind": "quotation"}, '  "A quoted answer."\n', 'An answer with a "quote" inside.'),
    "title": ({"kind": "title"}, "<<Volcano Facts>>\nLava is hot.", "<Volcano Facts>\nLava is hot."),
}


def test_at_least_14_kinds_and_every_kind_has_a_case():
    assert len(CONSTRAINT_KINDS) >= 14
    assert set(CASES) == set(CONSTRAINT_KINDS)


@pytest.mark.parametrize("kind", sorted(CASES))
def test_checker_accepts_passing_and_rejects_failing(kind):
    spec, passing, failing = CASES[kind]
    assert check(spec, passing) is True
    assert check(spec, failing) is False


@pytest.mark.parametrize("kind", sorted(CASES))
def test_describe_mentions_the_parameters(kind):
    spec = CASES[kind][0]
    text = describe(spec)
    assert text.strip() and text.endswith(".")
    for field in ("n", "word"):
        if field in spec:
            assert str(spec[field]) in text
    for key in spec.get("keys", []):
        assert f'"{key}"' in text


def test_counting_rules():
    assert words("Don't stop-now, 3.5 **bold** {\"k\": 1}") == ["Don't", "stop", "now", "3", "5", "bold", "k", "1"]
    assert count_sentences("Hi there. How are you?\n- a bullet\n\n---\nEnd") == 4
    assert count_sentences("Pi is 3.14 roughly... Yes!") == 2
    assert count_sentences("  \n\n") == 0
    assert paragraphs("a\n \nb\n\n\n c\n") == ["a", "b", "c"]


def test_edge_cases_of_checkers():
    assert not check({"kind": "lowercase"}, "123 !!")  # no letter at all
    assert not check({"kind": "uppercase"}, "")
    assert check({"kind": "include_keyword", "word": "hot spring"}, "A HOT\nspring bubbles.")
    assert not check({"kind": "json_keys", "keys": ["a"]}, "{not json}")
    assert not check({"kind": "json_keys", "keys": ["a"]}, '["a"]')
    assert check({"kind": "json_keys", "keys": ["a", "b"]}, '{"b": 2, "a": 1}')
    assert not check({"kind": "sentence_count_max", "n": 3}, "")
    assert check({"kind": "postscript"}, "Main.\n**P.S.** bye.")
    assert not check({"kind": "postscript"}, "Main text. PS bye.")
    assert check({"kind": "quotation"}, "\u201cCurly quotes count.\u201d")
    assert check({"kind": "end_with", "word": "Any questions?"}, "That is it. Any questions")


BAD_SPECS = [
    ({"kind": "word_count_max"}, "word_count_max.*'n'"),
    ({"kind": "word_count_max", "n": "40"}, "word_count_max.*'n'"),
    ({"kind": "bullet_count", "n": 0}, "bullet_count.*'n'"),
    ({"kind": "paragraph_count", "n": True}, "paragraph_count.*'n'"),
    ({"kind": "include_keyword"}, "include_keyword.*'word'"),
    ({"kind": "start_with", "word": " "}, "start_with.*'word'"),
    ({"kind": "keyword_frequency", "word": "lava"}, "keyword_frequency.*'n'"),
    ({"kind": "json_keys", "keys": "topic"}, "json_keys.*'keys'"),
    ({"kind": "json_keys", "keys": ["a", "a"]}, "json_keys.*'keys'"),
    ({"kind": "lowercase", "n": 3}, "lowercase.*unexpected"),
    ({"kind": "haiku"}, "unknown constraint kind 'haiku'"),
    ({"n": 3}, "unknown constraint kind None"),
]


@pytest.mark.parametrize("spec, message", BAD_SPECS)
def test_bad_specs_raise_value_error_naming_kind_and_field(spec, message):
    with pytest.raises(ValueError, match=message):
        check(spec, "any text")
    with pytest.raises(ValueError, match=message):
        describe(spec)


def test_kind_level_compatibility():
    assert compatible_kinds(["lowercase", "json_keys", "include_keyword"])
    assert compatible_kinds(["word_count_min", "word_count_max", "title", "bullet_count"])
    assert not compatible_kinds(["lowercase", "uppercase"])  # case group
    assert not compatible_kinds(["json_keys", "bullet_count"])  # format group
    assert not compatible_kinds(["quotation", "paragraph_count"])  # format group
    for other in ("start_with", "end_with", "postscript", "sentence_count_max", "no_commas", "uppercase"):
        assert not compatible_kinds(["json_keys", other]), other
    assert not compatible_kinds(["title", "title"])  # duplicates
    with pytest.raises(ValueError, match="haiku"):
        compatible_kinds(["haiku"])


def test_parameter_level_compatibility():
    low, high = {"kind": "word_count_min", "n": 30}, {"kind": "word_count_max", "n": 50}
    assert compatible([low, high])
    assert not compatible([low, {"kind": "word_count_max", "n": 30}])
    assert not compatible([low, {"kind": "word_count_max", "n": 35}])
    assert not compatible([{"kind": "exclude_keyword", "word": "lava"}, {"kind": "include_keyword", "word": "LAVA"}])
    assert not compatible([{"kind": "exclude_keyword", "word": "luck"}, {"kind": "end_with", "word": "Good luck"}])
    json_keys = {"kind": "json_keys", "keys": ["topic", "tip"]}
    assert not compatible([{"kind": "exclude_keyword", "word": "topic"}, json_keys])
    assert compatible([{"kind": "exclude_keyword", "word": "very"}, json_keys])
    lava_twice = {"kind": "keyword_frequency", "word": "lava", "n": 2}
    assert not compatible([{"kind": "include_keyword", "word": "lava"}, lava_twice])
    assert not compatible([{"kind": "sentence_count_max", "n": 2}, {"kind": "paragraph_count", "n": 3}])
    assert compatible([{"kind": "sentence_count_max", "n": 3}, {"kind": "paragraph_count", "n": 3}])
    reason = conflict_reason([{"kind": "lowercase"}, {"kind": "uppercase"}])
    assert "lowercase" in reason and "uppercase" in reason
    assert conflict_reason([low, high]) is None


def test_samplers_draw_valid_specs_in_documented_ranges():
    rng = random.Random(0)
    topic_words = ["lava", "magma", "crater"]
    for _ in range(30):
        for name in CONSTRAINT_KINDS:
            spec = sample_constraint(name, rng, topic_words)
            assert validate(spec).name == name
            assert describe(spec)
            if name == "word_count_max":
                assert 20 <= spec["n"] <= 80
            if name == "word_count_min":
                assert 20 <= spec["n"] <= 60
            if name == "bullet_count":
                assert 2 <= spec["n"] <= 5
            if name == "paragraph_count":
                assert 2 <= spec["n"] <= 3
            if name in ("include_keyword", "keyword_frequency"):
                assert spec["word"] in topic_words
            if name == "exclude_keyword":
                assert spec["word"] in EXCLUDABLE_WORDS
            if name == "start_with":
                assert spec["word"] in START_WORDS
            if name == "end_with":
                assert spec["word"] in END_PHRASES
            if name == "json_keys":
                assert 2 <= len(spec["keys"]) <= 3 and set(spec["keys"]) <= set(JSON_KEY_POOL)


def test_sample_constraints_gives_compatible_sets_led_by_first_kind():
    rng = random.Random(1)
    for i in range(300):
        first = list(CONSTRAINT_KINDS)[i % len(CONSTRAINT_KINDS)]
        count = 1 + i % 3
        specs = sample_constraints(rng, count, ["lava", "magma"], first_kind=first)
        assert len(specs) == count
        assert specs[0]["kind"] == first
        assert compatible(specs), specs


def test_sample_constraints_rejects_impossible_requests():
    with pytest.raises(ValueError, match="count"):
        sample_constraints(random.Random(0), 0, ["lava"])
    with pytest.raises(ValueError, match="could not draw"):
        sample_constraints(random.Random(0), len(CONSTRAINT_KINDS), ["lava"])

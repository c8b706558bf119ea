"""Constraint edits (helpers.edits): literal answers, exact results, and the checker agreeing."""

import pytest

from helpers.constraints import check
from helpers.edits import POSTSCRIPT_TEXT, edit_answer, finish, meet, violate

ANSWER = "Volcanoes are very hot, and they erupt. Lava flows down. Ash rises high."

MEET_CASES = [
    ({"kind": "lowercase"}, "volcanoes are very hot, and they erupt. lava flows down. ash rises high."),
    ({"kind": "uppercase"}, "VOLCANOES ARE VERY HOT, AND THEY ERUPT. LAVA FLOWS DOWN. ASH RISES HIGH."),
    ({"kind": "no_commas"}, "Volcanoes are very hot and they erupt. Lava flows down. Ash rises high."),
    ({"kind": "exclude_keyword", "word": "very"}, "Volcanoes are hot, and they erupt. Lava flows down. Ash rises high."),
    ({"kind": "start_with", "word": "Imagine"},
     "Imagine volcanoes are very hot, and they erupt. Lava flows down. Ash rises high."),
    ({"kind": "end_with", "word": "Good luck"}, ANSWER + " Good luck."),
    ({"kind": "postscript"}, ANSWER + "\n\n" + POSTSCRIPT_TEXT),
    ({"kind": "quotation"}, f"\"{ANSWER}\""),
    ({"kind": "title"}, "<<Volcanoes Are Very Hot>>\n\n" + ANSWER),
    ({"kind": "word_count_max", "n": 10}, "Volcanoes are very hot, and they erupt. Lava flows down."),
    ({"kind": "sentence_count_max", "n": 2}, "Volcanoes are very hot, and they erupt. Lava flows down."),
]


@pytest.mark.parametrize("spec, expected", MEET_CASES, ids=[spec["kind"] for spec, _ in MEET_CASES])
def test_meet_makes_the_smallest_rule_edit_that_satisfies_the_checker(spec, expected):
    assert not check(spec, ANSWER)
    assert meet(spec, ANSWER) == expected
    assert check(spec, expected)
    assert meet(spec, expected) is None  # met already: nothing to fix


VIOLATE_CASES = [
    ({"kind": "lowercase"}, "the sea is calm. we swim at noon.", "The sea is calm. We swim at noon."),
    ({"kind": "uppercase"}, "THE SEA IS CALM. WE SWIM.", "The sea is calm. We swim."),
    ({"kind": "include_keyword", "word": "sea"}, "The sea is calm. We swim.", "The is calm. We swim."),
    ({"kind": "start_with", "word": "Today"}, "Today, the sea is calm.", "The sea is calm."),
    ({"kind": "end_with", "word": "The end"}, "The sea is calm. The end.", "The sea is calm."),
    ({"kind": "postscript"}, "The sea is calm.\n\nP.S. Bring a towel.", "The sea is calm."),
    ({"kind": "quotation"}, "\"The sea is calm.\"", "The sea is calm."),
    ({"kind": "title"}, "<<Sea>>\nThe sea is calm.", "The sea is calm."),
    ({"kind": "bullet_count", "n": 2}, "Tips:\n- swim\n- rest", "Tips:\n- swim"),
    ({"kind": "paragraph_count", "n": 2}, "The sea.\n\nThe sand.", "The sea.\nThe sand."),
    ({"kind": "json_keys", "keys": ["a", "b"]}, '{"a": 1, "b": 2}', '{\n  "a": 1\n}'),
    ({"kind": "word_count_min", "n": 6}, "The sea is calm today. We swim at noon.", "The sea is calm today."),
]


@pytest.mark.parametrize("spec, answer, expected", VIOLATE_CASES, ids=[c[0]["kind"] for c in VIOLATE_CASES])
def test_violate_breaks_one_constraint_the_answer_met(spec, answer, expected):
    assert check(spec, answer)
    assert violate(spec, answer) == expected
    assert not check(spec, expected)
    assert violate(spec, expected) is None  # missed already: nothing to break


def test_no_edit_where_no_simple_rule_applies():
    assert meet({"kind": "word_count_min", "n": 50}, ANSWER) is None  # would need new content
    assert meet({"kind": "keyword_frequency", "word": "lava", "n": 3}, ANSWER) is None
    assert meet({"kind": "word_count_max", "n": 3}, ANSWER) is None  # not even the first sentence fits
    assert violate({"kind": "no_commas"}, "No commas here.") is None
    assert violate({"kind": "end_with", "word": "The end"}, "The end.") is None  # nothing left before it


LOWER = "the sea is calm. we swim at noon."


@pytest.mark.parametrize("spec", [{"kind": "start_with", "word": "Today"}, {"kind": "end_with", "word": "Good luck"},
                                  {"kind": "postscript"}, {"kind": "title"}], ids=lambda spec: spec["kind"])
def test_added_words_take_the_answers_case_so_other_constraints_hold(spec):
    lowercase, uppercase = {"kind": "lowercase"}, {"kind": "uppercase"}
    assert check(spec, meet(spec, LOWER)) and check(lowercase, meet(spec, LOWER))
    assert check(spec, meet(spec, LOWER.upper())) and check(uppercase, meet(spec, LOWER.upper()))


def test_edits_keep_what_surrounds_the_part_they_change():
    assert meet({"kind": "start_with", "word": "Here"}, "NASA flies. I watch.") == "Here NASA flies. I watch."
    assert violate({"kind": "start_with", "word": "Today"}, '"Today, lava flows."') == '"Lava flows."'
    assert violate({"kind": "start_with", "word": "Today"}, "- Today we swim\n- rest") == "- We swim\n- rest"
    assert meet({"kind": "exclude_keyword", "word": "very"}, "Very hot lava.") == "Hot lava."
    fenced = '```json\n{"a": "caf\u00e9", "b": 2}\n```'
    assert violate({"kind": "json_keys", "keys": ["a", "b"]}, fenced) == '```json\n{\n  "a": "caf\u00e9"\n}\n```'
    lines = "One.\nTwo.\nThree.\nFour."  # a line break ends a sentence; blank pieces do not count
    assert meet({"kind": "sentence_count_max", "n": 3}, lines) == "One.\nTwo.\nThree."
    assert violate({"kind": "quotation"}, '"Lava" is hot and "ash"') is None  # not one quotation


def test_nothing_to_edit_in_an_empty_answer():
    for spec in ({"kind": "start_with", "word": "Today"}, {"kind": "end_with", "word": "The end"}, {"kind": "quotation"},
                 {"kind": "postscript"}, {"kind": "title"}):
        assert meet(spec, "  ") is None


def test_finish_ends_a_cut_off_answer_after_its_last_whole_sentence():
    assert finish("Lava flows down. Ash rises high. Then the") == "Lava flows down. Ash rises high."
    assert finish("Is it hot? Yes!  ") == "Is it hot? Yes!"
    assert finish("Version 2.5 of the") is None  # "2.5" ends no sentence
    assert finish("no sentence ends here") is None


def test_edit_answer_trims_then_meets_each_missed_constraint_in_order():
    title, short = {"kind": "title"}, {"kind": "word_count_max", "n": 9}
    cut = "Lava flows down the hill. Ash rises high over the town and"
    assert edit_answer([title], cut, truncated=True) == "<<Lava Flows Down The>>\n\nLava flows down the hill."
    assert edit_answer([short, title], ANSWER, truncated=False) == "<<Volcanoes Are Very Hot>>\n\n" \
        "Volcanoes are very hot, and they erupt."  # cut to 7 words, then titled: the labeler decides
    assert edit_answer([title], "<<Lava>>\n\nLava flows.", truncated=False) is None  # met already: no edit
    assert edit_answer([title], "lava flows and", truncated=True) is None  # no whole sentence to keep
    assert edit_answer([{"kind": "include_keyword", "word": "ash"}], "Lava flows. And", truncated=True) == "Lava flows."

"""Tests for helpers.labeler: each gate, the score arithmetic, and realistic answers passing."""

import pytest

from helpers.labeler import (
    GATE_FACTOR,
    Judgement,
    finished,
    gold_score,
    judge,
    nonempty,
    not_repetitive,
    on_topic,
    substantive,
)

VOLCANO_KEYWORDS = ["volcan", "lava", "magma", "crater", "eruption"]


def make_row(constraints, keywords=VOLCANO_KEYWORDS, row_id="gen-test-00000"):
    """A row shaped like the instruction generator's output."""
    return {
        "id": row_id,
        "split": "eval",
        "source": "generated",
        "messages": [{"role": "user", "content": "Describe volcanoes briefly."}],
        "task": "describe",
        "topic": "volcanoes",
        "topic_keywords": keywords,
        "constraints": constraints,
    }


ROW = make_row([{"kind": "word_count_max", "n": 40}, {"kind": "lowercase"}])
PERFECT = (
    "volcanoes form where magma rises through cracks in the crust. "
    "when the pressure builds up, they erupt and pour out glowing lava."
)


# ---------------------------------------------------------------------------
# Gates, one passing and one failing example each
# ---------------------------------------------------------------------------

def test_gate_nonempty():
    assert nonempty("x")
    assert not nonempty(" \n\t ")


def test_gate_substantive():
    assert substantive("Lava is hot and bright.")
    assert not substantive("Volcano.")
    assert not substantive("Lava is very hot.")  # four words


def test_gate_on_topic():
    assert on_topic("Volcanic ash covered the town.", VOLCANO_KEYWORDS)
    assert on_topic('{"topic": "MAGMA chambers"}', VOLCANO_KEYWORDS)
    assert not on_topic("Bread needs flour and a warm oven.", VOLCANO_KEYWORDS)
    # Stems match at the start of a word only: "cat" is not found inside "education".
    assert on_topic("Cats sleep a lot.", ["cat"])
    assert not on_topic("Education matters.", ["cat"])


def test_gate_not_repetitive():
    assert not_repetitive(PERFECT)
    assert not_repetitive("It was very very very hot.")  # a run of three is allowed
    assert not not_repetitive("the lava is hot. " * 8)  # few distinct 3-grams
    assert not not_repetitive("Lava!\nlava! \nLava!")  # one line three times
    assert not not_repetitive("It is very very very very hot.")  # one word four times in a row


def test_gate_finished():
    assert finished("The volcano erupted.")
    assert finished("It erupted!)")
    assert not finished("The volcano erupted and")
    assert not finished("The volcano erupted,")
    assert not finished("Three facts follow:")
    assert not finished("The eruption began in (")
    assert finished("Three facts:\n- lava is hot\n- ash is grey")
    assert finished('{"topic": "lava"}')
    assert finished("Here it is:\n```json\n{\"topic\": \"lava\"\n```")
    good_luck = [{"kind": "end_with", "word": "good luck"}]
    assert finished("Go see a volcano. Good luck", good_luck)
    assert not finished("Go see a volcano. Good luck")
    assert finished("Dear Sam,\nThe volcano erupted.\n\nBest wishes,\nAlex")
    assert not finished("Dear Sam,\nThe volcano erupted and then it went quiet,\nAlex")


def test_gate_finished_truncated_flag():
    assert not finished("The volcano erupted.", truncated=True)
    assert finished("The volcano erupted.", truncated=False)
    assert not finished("The volcano erupted and", truncated=False)


# ---------------------------------------------------------------------------
# Scores
# ---------------------------------------------------------------------------

def test_perfect_answer_scores_one():
    judgement = judge(ROW, PERFECT)
    assert judgement.score == 1.0
    assert judgement.passed_gates
    assert judgement.constraints == {"word_count_max": True, "lowercase": True}
    assert list(judgement.gates) == ["nonempty", "substantive", "on_topic", "not_repetitive", "finished"]


def test_half_the_constraints_scores_half():
    judgement = judge(ROW, PERFECT.capitalize())
    assert judgement.score == 0.5
    assert judgement.constraints == {"word_count_max": True, "lowercase": False}


def test_constraints_keep_row_order():
    row = make_row([{"kind": "lowercase"}, {"kind": "no_commas"}, {"kind": "word_count_max", "n": 40}])
    assert list(judge(row, PERFECT).constraints) == ["lowercase", "no_commas", "word_count_max"]
    assert judge(row, PERFECT).score == pytest.approx(2 / 3)


def test_off_topic_answer_meeting_every_constraint_is_gated():
    off_topic = "bread needs flour, water and a warm oven to rise well."
    judgement = judge(ROW, off_topic)
    assert all(judgement.constraints.values())
    assert judgement.gates["on_topic"] is False
    assert judgement.score <= GATE_FACTOR


def test_reward_hacks_are_gated():
    assert gold_score(ROW, "volcano.") <= GATE_FACTOR  # too short
    assert gold_score(ROW, "") <= GATE_FACTOR
    assert gold_score(ROW, "lava lava lava lava lava lava.") <= GATE_FACTOR  # repetitive
    assert gold_score(ROW, "volcanoes form where magma rises and") <= GATE_FACTOR  # cut off


def test_gated_score_is_share_times_gate_factor():
    judgement = judge(ROW, "Volcano.")  # meets word_count_max only, fails substantive
    assert not judgement.passed_gates
    assert judgement.score == pytest.approx(0.5 * GATE_FACTOR)


def test_truncated_flag_gates_an_otherwise_perfect_answer():
    judgement = judge(ROW, PERFECT, truncated=True)
    assert judgement.gates["finished"] is False
    assert judgement.score == pytest.approx(GATE_FACTOR)
    assert gold_score(ROW, PERFECT, truncated=False) == 1.0


def test_judge_is_deterministic():
    assert judge(ROW, PERFECT.capitalize()) == judge(ROW, PERFECT.capitalize())
    assert isinstance(judge(ROW, PERFECT), Judgement)


def test_rows_not_from_the_generator_raise():
    hh_row = {"id": "hh-harmless-0007", "prompt": "\n\nHuman: hi\n\nAssistant:", "chosen": "Hi!", "rejected": "No."}
    with pytest.raises(ValueError, match="hh-harmless-0007.*instruction generator"):
        judge(hh_row, "Hello there, how can I help you today?")
    with pytest.raises(ValueError, match="instruction generator"):
        gold_score(make_row([]), PERFECT)
    with pytest.raises(ValueError, match="repeats"):
        judge(make_row([{"kind": "lowercase"}, {"kind": "lowercase"}]), PERFECT)


# ---------------------------------------------------------------------------
# Realistic, well-formed answers must pass every gate
# ---------------------------------------------------------------------------

REALISTIC = [
    (
        ["bicycl", "bike", "ride", "wheel", "pedal"],
        "Bicycles are one of the most efficient ways to travel. A rider pushes the pedals, which turn a chain "
        "connected to the back wheel, and the bike rolls forward with very little effort. They are cheap to "
        "maintain, quiet, and good for your health. In many cities, people ride to work every day because it "
        "is often faster than sitting in traffic.",
    ),
    (
        ["bread", "dough", "flour", "bake", "yeast"],
        "Here are some tips for making bread at home:\n\n"
        "- Use fresh yeast and check that it bubbles before adding flour.\n"
        "- Knead the dough for about ten minutes until it feels smooth.\n"
        "- Let it rise somewhere warm, covered with a towel.\n"
        "- Bake it in a hot oven until the crust sounds hollow when tapped.",
    ),
    (
        ["moon", "lunar", "orbit", "crater", "tides"],
        '```json\n{\n  "topic": "The Moon",\n  "summary": "Earth\'s only natural satellite, covered in craters.",\n'
        '  "facts": ["It orbits Earth every 27 days.", "Its gravity drives the ocean tides."]\n}\n```',
    ),
    (
        ["garden", "plant", "soil", "seeds", "flower"],
        "Dear Sam,\n\nI finally started a small garden behind the house. The soil was hard at first, but after "
        "adding compost the seeds came up within a week.\n\nYou should come and see the tomatoes, they are "
        "already taller than the fence! Let me know when you are free.\n\nBest wishes,\nAlex",
    ),
    (
        ["owl", "night", "hoot", "feathers", "prey"],
        "Under the silver moon so bright,\nThe owl keeps watch all through the night.\n"
        "On silent feathers, soft and grey,\nIt glides to hunt before the day.",
    ),
]


@pytest.mark.parametrize("keywords, answer", REALISTIC)
def test_realistic_answers_pass_every_gate(keywords, answer):
    row = make_row([{"kind": "word_count_max", "n": 200}], keywords=keywords)
    judgement = judge(row, answer)
    assert judgement.gates == dict.fromkeys(judgement.gates, True)
    assert judgement.score == 1.0


def test_gold_scores_judge_each_answer_with_its_row_and_cut_off_flag():
    from helpers.labeler import gold_score, gold_scores

    row = {"id": "r", "topic_keywords": ["volcan"], "constraints": [{"kind": "lowercase"}]}
    text = "volcanoes erupt when molten rock rises."
    assert gold_scores([row, row], [text, text], [False, True]) == [gold_score(row, text), gold_score(row, text, truncated=True)]
    assert gold_scores([row, row], [text, text], [False, True]) == [1.0, 0.05]

"""Masking numbers said aloud as words in a record's transcript ("four one one one", "double
five", "forty two"), alone or mixed with digits, and leaving ordinary sentences alone."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.call import Call
from gateway.core.masking import DIGITS_MASK, MIN_DIGITS, digit_count, mask_digit_runs
from gateway.records import CallEvents, RecordOptions, build_record
from tests.core.test_records import a_call, caller_says

UNITS = ["one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
ZEROS = ["zero", "oh", "o"]
TEENS = ["ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen",
         "nineteen"]
TENS = ["twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
# ordinary words, some with a digit word inside them, which must never count
WORDS = ["the", "card", "is", "my", "number", "someone", "often", "tone", "phone", "ocean", "weight", "tenth",
         "hundred", "thousand", "and", "of", "question", "options", "Oh's", "o'clock", "o\u2019clock", "none",
         "fourth", "sevens"]


@pytest.mark.parametrize(("text", "masked"), [
    ("four one one one one one one one", DIGITS_MASK),
    ("my card is four one one one, one one one one, one one one one.", f"my card is {DIGITS_MASK}."),
    ("Four One One One - One One One One", DIGITS_MASK),
    ("FOUR ONE ONE ONE ONE ONE ONE ONE!", f"{DIGITS_MASK}!"),
    ("oh two zero seven nine four six one", DIGITS_MASK),
    ("it's o two zero seven, nine four six one thanks", f"it's {DIGITS_MASK} thanks"),
    ("double five, triple seven, one two three", DIGITS_MASK),  # 2 + 3 + 3
    ("double 5 triple 7 one 2 3", DIGITS_MASK),
    ("4 1 one one 2 2 two two", DIGITS_MASK),  # mixed with digits
    ("4111 one one one one", DIGITS_MASK),
    ("forty one eleven, eleven eleven", DIGITS_MASK),  # 2 + 2 + 2 + 2
    ("forty-two forty-two forty-two forty-two", DIGITS_MASK),
    ("(four one five) five five five, oh one oh oh", DIGITS_MASK),
    ("call (four one five five five five oh one) today", f"call {DIGITS_MASK} today"),  # as "(12345678)"
    ("(call four one five five five five oh one) today", f"(call {DIGITS_MASK}) today"),
    ("one of the two options", "one of the two options"),
    ("I have one question", "I have one question"),
    ("I need two tickets for the eight fifteen show on the twenty third", "I need two tickets for the eight "
     "fifteen show on the twenty third"),
    ("one two three four five six seven", "one two three four five six seven"),  # 7 digits
    ("forty two forty two forty two", "forty two forty two forty two"),  # 6 digits
    ("one and two and three and four and five and six and seven and eight", "one and two and three and four and "
     "five and six and seven and eight"),  # a word between them: runs of one
    ("someone often phoned at seven o'clock, one two three", "someone often phoned at seven o'clock, one two three"),
    ("at seven o\u2019clock one two three four five six", "at seven o\u2019clock one two three four five six"),
    ("four hundred one two three four five six", "four hundred one two three four five six"),  # 1, then 6
    ("", ""),
])
def test_numbers_said_as_words_are_masked_and_ordinary_sentences_are_not(text: str, masked: str) -> None:
    assert mask_digit_runs(text) == masked


@pytest.mark.parametrize(("run", "digits"), [
    ("one", 1), ("oh", 1), ("O", 1), ("zero", 1), ("7", 1), ("4111", 4),
    ("double five", 2), ("triple oh", 3), ("double 5", 2), ("Triple-7", 3), ("double 55", 3),
    ("ten", 2), ("nineteen", 2), ("forty", 2), ("forty two", 2), ("forty-two", 2), ("forty, two", 3),
    ("twenty one two", 3), ("four one one one, one one one one", 8),
])
def test_how_words_count_as_digits(run: str, digits: int) -> None:
    assert digit_count(run) == digits


def test_the_shortest_masked_run_of_words_is_the_same_setting() -> None:
    assert mask_digit_runs("PIN four two two one", min_digits=4) == f"PIN {DIGITS_MASK}"
    assert mask_digit_runs("PIN four two one", min_digits=4) == "PIN four two one"
    eight = "four one one one one one one one"
    assert mask_digit_runs(eight, min_digits=12) == eight


# --- property: an oracle that reads the same text item by item ---------------------------------

# a piece of a number and how many digits it says on its own
NUMBER_ITEMS = st.one_of(
    st.sampled_from(UNITS + ZEROS).map(lambda w: (w, 1)),
    st.sampled_from(TEENS + TENS).map(lambda w: (w, 2)),
    st.integers(0, 9999).map(lambda n: (str(n), len(str(n)))),
    st.tuples(st.sampled_from(["double", "triple"]), st.sampled_from(UNITS + ZEROS + list("0123456789")))
    .map(lambda p: (f"{p[0]} {p[1]}", 2 if p[0] == "double" else 3)),
)
ITEMS = st.one_of(NUMBER_ITEMS, st.sampled_from(WORDS).map(lambda w: (w, 0)))
CASES = st.sampled_from([str.lower, str.upper, str.title])
JOINERS = [" ", ", ", "-", " - ", ". ", " and "]  # " and " is a word: it ends a run


def _expected(items: list[tuple[str, int]], joiners: list[str], min_digits: int) -> str:
    """The text with each run of number items saying min_digits digits or more replaced by the mask,
    item by item (tens followed by a unit word with only a space or a dash between them count once)."""
    counts = [n for _w, n in items]
    for i in range(1, len(items)):
        before, word = items[i - 1][0].lower(), items[i][0].lower()
        if before in TENS and word in UNITS and joiners[i - 1].strip() in ("", "-") and counts[i - 1] == 2:
            counts[i] = 0  # "forty two": two digits in all
    out: list[str] = []
    i = 0
    while i < len(items):
        if items[i][1] == 0:  # an ordinary word
            out.append(items[i][0])
            i += 1
        else:
            j = i
            while j + 1 < len(items) and items[j + 1][1] > 0 and joiners[j] != " and ":
                j += 1
            run = items[i][0] + "".join(joiners[k] + items[k + 1][0] for k in range(i, j))
            out.append(DIGITS_MASK if sum(counts[i:j + 1]) >= min_digits else run)
            i = j + 1
        if i < len(items):
            out.append(joiners[i - 1])
    return "".join(out)


@given(st.lists(st.tuples(ITEMS, CASES, st.sampled_from(JOINERS)), max_size=30), st.integers(2, 12))
def test_runs_said_aloud_are_masked_exactly_when_they_say_enough_digits(
        parts: list[tuple[tuple[str, int], object, str]], min_digits: int) -> None:
    items = [(case(word), n) for (word, n), case, _j in parts]  # type: ignore[operator]
    joiners = [j for _i, _c, j in parts]
    text = "".join(word + (joiners[k] if k + 1 < len(items) else "") for k, (word, _n) in enumerate(items))
    masked = mask_digit_runs(text, min_digits)
    assert masked == _expected(items, joiners, min_digits)
    assert mask_digit_runs(masked, min_digits) == masked


@given(st.lists(st.sampled_from(WORDS + UNITS + ZEROS + TEENS + TENS), max_size=30),
       st.lists(st.sampled_from(WORDS), min_size=1, max_size=3))
def test_text_with_a_word_between_every_few_digit_words_is_unchanged(words: list[str], fillers: list[str]) -> None:
    """Fewer than 8 digits between two ordinary words: nothing is masked, whatever the words are."""
    text: list[str] = []
    said = 0  # digits said since the last ordinary word (counted high: "forty two" as 2 + 1)
    for word in words:
        n = 0 if word in WORDS else 1 if word in UNITS + ZEROS else 2
        if n == 0:
            said = 0
        elif said + n >= MIN_DIGITS:
            text += fillers
            said = n
        else:
            said += n
        text.append(word)
    sentence = " ".join(text)
    assert mask_digit_runs(sentence) == sentence


# --- the record -------------------------------------------------------------------------------


def _record(call: Call, events: CallEvents, **options: object) -> dict:
    return build_record(call, events.events, record_id="rec_w", carrier="asterisk", clock_zero_s=0.0,
                        options=RecordOptions(**options))  # type: ignore[arg-type]


def test_a_card_number_said_aloud_never_reaches_the_record_unless_the_profile_says_so() -> None:
    call, events = a_call()
    said = "my card is four one one one, one one one one, one one one one, one one one one"
    caller_says(call, "item_u1", said, 100.0)
    caller_says(call, "item_u2", "and the code is double five three", 200.0)
    call.phone_ended("caller_hung_up", 1000.0)
    record = _record(call, events)
    assert [t["text"] for t in record["transcript"]] == [f"my card is {DIGITS_MASK}",
                                                        "and the code is double five three"]
    assert _record(call, events, min_digits=3)["transcript"][1]["text"] == f"and the code is {DIGITS_MASK}"
    assert _record(call, events, mask_digits=False)["transcript"][0]["text"] == said

"""Run search: words' beginnings in any case and script, and id prefixes."""

from hypothesis import given
from hypothesis import strategies as st

from services.api.search import MAX_KEY, run_matcher, search_key, search_keys

RUN_ID = "0123abcd" + "0" * 24


def matches(term: str, name: str) -> bool:
    return run_matcher(term)({"_id": RUN_ID, "name": name})


def test_a_term_matches_at_the_start_of_a_word_in_any_case() -> None:
    assert matches("DETECTOR", "dog-detector v2") and matches("dog-det", "dog-detector v2")
    assert matches("lr0.01", "rtmdet lr0.01 bs8") and matches("01", "rtmdet lr0.01")
    assert not matches("tector", "dog-detector v2") and not matches("0.01", "rtmdet lr0.01")
    assert matches("größe", "Modell GRÖSSE 2")  # casefolded: ß is ss
    assert matches("испыт", "Новое ИСПЫТАНИЕ") and matches("(.*", "odd (.* name")


def test_id_prefixes_of_four_to_eight_digits_are_keys() -> None:
    keys = search_keys("x", RUN_ID)
    assert {"0123", "0123a", "0123abcd"} <= set(keys) and "0123abcd0" not in keys
    assert matches("0123ab", "unrelated")


@given(st.text(min_size=1, max_size=60), st.text(min_size=1, max_size=40))
def test_every_match_has_the_terms_key(name: str, term: str) -> None:
    # The index lookup never loses a run the matcher would accept.
    key = search_key(term)
    if key is not None and run_matcher(term)({"_id": "f" * 32, "name": name}):
        assert key in search_keys(name, "f" * 32)


def test_the_rarest_looking_word_is_looked_up() -> None:
    assert search_key("run-4242") == "4242" and search_key("(.*") is None


def test_long_words_are_keyed_up_to_max_key() -> None:
    word = "a" * (MAX_KEY + 10)
    assert max(map(len, search_keys(word, RUN_ID))) == MAX_KEY
    assert search_key(word) == "a" * MAX_KEY and matches(word, f"x {word}")

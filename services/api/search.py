"""Searching runs by name or id: the beginnings of words, kept as an indexed list on each run.

A term matches a run whose name has the term at the start of a word (any case;
words are runs of letters and digits in any script), or whose id starts with it.
"detector" finds "dog-detector v2"; "dog-det" finds it too; "tector" does not.
Each run stores `search_keys`: every prefix (up to MAX_KEY characters) of every
word of its name and the first 4 to 8 hex digits of its id. A search looks up
the term's longest word in the (project, search_keys, created_at, _id) index,
so a rare name is found by an index seek instead of reading every name in the
project (7.5 s at 100,000 runs on the local server before), and the rest of
the term is checked on the few candidates.
"""

import re
from collections.abc import Callable
from typing import Any

WORD = re.compile(r"[^\W_]+")
# Words are keyed up to this many characters; a longer term is narrowed by its first
# MAX_KEY characters, then checked whole.
MAX_KEY = 24
# The first 4..8 hex digits of an id are keys; 8 or more are looked up by _id instead.
ID_KEY_DIGITS = range(4, 9)
ID_PREFIX = re.compile(r"^[0-9a-f]{8,32}$")
HEX_PREFIX = re.compile(r"^[0-9a-f]{4,31}$")


def search_keys(name: str, run_id: str) -> list[str]:
    keys = {run_id[:digits] for digits in ID_KEY_DIGITS}
    for word in WORD.findall(name.casefold()):
        keys.update(word[:n] for n in range(1, min(len(word), MAX_KEY) + 1))
    return sorted(keys)


def search_key(term: str) -> str | None:
    """A key every run matching `term` has (None: no word in it).

    Every word of the term begins a word of a matching name (the characters
    between them are the name's too), so any of them would do; the longest is
    usually the rarest: "run-4242" looks up "4242", not the "run" of every run."""
    words = WORD.findall(term.casefold())
    return max(words, key=len)[:MAX_KEY] if words else None


def run_matcher(term: str) -> Callable[[dict[str, Any]], bool]:
    """Whether a run (its name and id) matches `term`."""
    needle = term.casefold()
    at_word_start = re.compile(("(?<![^\\W_])" if WORD.match(needle) else "") + re.escape(needle))
    prefix = term.lower() if HEX_PREFIX.match(term.lower()) else None

    def matches(run: dict[str, Any]) -> bool:
        if prefix is not None and str(run["_id"]).startswith(prefix):
            return True
        return at_word_start.search(str(run.get("name", "")).casefold()) is not None

    return matches

"""From a generated text to a class: where the answer ends, and which label word it is.

An answer ends at the first newline (demonstrations are separated by blank lines) or at the
template's demonstration separator. It is then normalised (stripped, lower-cased, trailing
punctuation removed) and matched to the label words: ``exact`` wants the whole answer to be a
label word, ``prefix`` accepts an answer that starts with one (the longest that fits).
"""

from __future__ import annotations

from icl.errors import unknown_name

MATCHES = ("exact", "prefix")
TRAILING = ".,;:!?\"'"


def answer_text(text: str, demo_sep: str) -> str:
    """The generated text up to the first newline or demonstration separator."""
    cut = len(text)
    for marker in ("\n", demo_sep):
        if marker and marker in text:
            cut = min(cut, text.index(marker))
    return text[:cut]


def stops(text: str, demo_sep: str) -> bool:
    """Whether the text already holds a whole answer (a newline or separator follows it)."""
    return answer_text(text, demo_sep) != text


def normalise(text: str) -> str:
    return text.strip().lower().rstrip(TRAILING).strip()


def match_class(answer: str, label_words, match: str = "exact") -> int | None:
    """The class whose label word the answer is (or starts with); None: not a label word."""
    if match not in MATCHES:
        raise unknown_name("decoding.match", match, MATCHES)
    said = normalise(answer)
    words = [normalise(w) for w in label_words]
    if match == "exact":
        return words.index(said) if said in words else None
    fits = [(len(w), c) for c, w in enumerate(words) if w and said.startswith(w)]
    return max(fits)[1] if fits else None

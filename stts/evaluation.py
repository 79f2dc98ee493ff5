"""Word error rate against reference transcripts, with a number-aware text normaliser.

References in the corpus spell numbers out ("ten", "one zero zero zero one", "oh" for
zero) while Whisper writes digits ("10", "10001"), so both sides are normalised the same
way: lowercase, punctuation dropped, numerals spelled out (0-99 as cardinals, longer
digit strings digit by digit), "oh" read as "zero". WER itself comes from jiwer
(installed by the ``dev`` and ``bench`` extras).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

_ONES = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
]
_TENS = ["_", "_", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
_NUMBER = re.compile(r"\d+")
_NON_WORD = re.compile(r"[^a-z0-9' ]+")


def _spell(number: str) -> str:
    if len(number) > 2:
        return " ".join(_ONES[int(d)] for d in number)
    value = int(number)
    if value < 20:
        return _ONES[value]
    tens, ones = divmod(value, 10)
    return _TENS[tens] + ("" if ones == 0 else " " + _ONES[ones])


def normalize_text(text: str) -> str:
    """Lowercase, no punctuation, numbers spelled the way the references write them."""
    text = unicodedata.normalize("NFKC", text).lower()
    text = text.replace("-", " ").replace("%", " percent")
    text = _NUMBER.sub(lambda m: f" {_spell(m.group())} ", text)
    text = _NON_WORD.sub(" ", text)
    words = [w.strip("'") for w in text.split()]
    return " ".join("zero" if w == "oh" else w for w in words if w)


def word_error_rate(references: Sequence[str], hypotheses: Sequence[str]) -> float:
    """Corpus-level WER (total edits / total reference words) after normalisation."""
    import jiwer

    refs = [normalize_text(r) for r in references]
    hyps = [normalize_text(h) for h in hypotheses]
    return float(jiwer.wer(refs, hyps))

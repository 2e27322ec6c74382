"""A phonetic key for Spanish names as written in Mexico.

Two spellings that sound alike in Mexican Spanish get the same key, so "Vázquez", "Basquez"
and "Vasques" block and compare together, and so do "Ximena" and "Jimena". Rules (applied
left to right on the accent-free lowercase word, ``ñ`` already ``n``):

- b, v, w sound alike: ``B``
- s, z, c before e/i: ``S`` (seseo); ``sh`` too
- c before a/o/u or a consonant, k, qu, q: ``K``
- g before e/i, j, and an initial x (Ximena, Xavier: the old spelling of the j sound): ``J``;
  x before a consonant: ``S`` (Mixteco); any other x: ``KS`` (Alexis, Maximiliano)
- gu before e/i: ``G`` (the u is silent); gü was already gu
- ll and y before a vowel: ``Y``; a final or pre-consonant y is the vowel ``I``
- h is silent (except in ch: ``C``); ph: ``F``
- n before b/p/v sounds m: ``M``
- double letters (rr, ss, cc before a/o/u...) collapse; vowels are kept (Paz/Pérez differ)

A multi-word name keys word by word, joined with single spaces.
"""

from __future__ import annotations

import functools

_VOWELS = frozenset("aeiou")
_FRONT = frozenset("ei")
_SIMPLE = {
    "a": "A", "e": "E", "i": "I", "o": "O", "u": "U",
    "b": "B", "v": "B", "w": "B",
    "d": "D", "f": "F", "k": "K", "q": "K", "l": "L", "m": "M", "n": "N",
    "p": "P", "r": "R", "s": "S", "z": "S", "t": "T",
}  # fmt: skip


def _word_key(w: str) -> str:
    out: list[str] = []
    n = len(w)
    i = 0
    while i < n:
        c = w[i]
        nxt = w[i + 1] if i + 1 < n else ""
        after = w[i + 2] if i + 2 < n else ""
        step = 1
        if c == "c":
            if nxt == "h":
                code, step = "C", 2
            elif nxt in _FRONT:
                code = "S"
            else:
                code = "K"
        elif c == "q":
            code, step = ("K", 2) if nxt == "u" else ("K", 1)
        elif c == "g":
            if nxt in _FRONT:
                code = "J"
            elif nxt == "u" and after in _FRONT:
                code, step = "G", 2
            else:
                code = "G"
        elif c == "j":
            code = "J"
        elif c == "x":
            code = "J" if i == 0 else ("S" if nxt and nxt not in _VOWELS else "KS")
        elif c == "h":
            code = ""
        elif c == "s" and nxt == "h":
            code, step = "S", 2
        elif c == "p" and nxt == "h":
            code, step = "F", 2
        elif c == "l" and nxt == "l":
            code, step = "Y", 2
        elif c == "y":
            code = "Y" if nxt in _VOWELS else "I"
        elif c == "n" and nxt in ("b", "p", "v"):
            code = "M"
        else:
            code = _SIMPLE.get(c, "")
        if code and not (out and out[-1] == code):
            out.append(code)
        i += step
    return "".join(out)


@functools.lru_cache(maxsize=65536)
def phonetic_key(normalized: str) -> str:
    """The phonetic key of an accent-free lowercase name (``features.normalize_name`` output):
    ``"vazquez"`` -> ``"BASKES"``, ``"ximena"`` -> ``"JIMENA"``; ``""`` for an empty name."""
    return " ".join(k for k in (_word_key(w) for w in normalized.split()) if k)

"""How guessable a configured key is: a cheap estimate, to refuse ``aaaaaaaaaaaaaaaa``.

:func:`weakness` estimates a key's entropy as its length times the Shannon entropy of its
characters (bits per character, from their frequencies), and refuses keys under
:data:`MIN_BITS` once their runs (``abcdef``, ``123456``, ``aaaa``) are taken out, or with fewer
than :data:`MIN_DISTINCT` distinct characters. It is an estimate from the text alone: a key drawn at
random (``openssl rand -base64 24``, ``python -c "import secrets; print(secrets.token_urlsafe())"``)
passes by far; a short phrase may pass and still be guessable.
"""

from __future__ import annotations

import math
from collections import Counter

#: the least estimated entropy of a key (bits)
MIN_BITS = 40.0
#: the fewest distinct characters in a key
MIN_DISTINCT = 8


def estimated_bits(text: str) -> float:
    """Length times the Shannon entropy of *text*'s characters (bits)."""
    if not text:
        return 0.0
    counts = Counter(text)
    total = len(text)
    per_char = -sum(n / total * math.log2(n / total) for n in counts.values())
    return per_char * total


def weakness(text: str) -> str | None:
    """Why *text* is too guessable to be a key, or ``None`` when it is not (by this estimate)."""
    if len(set(text)) < MIN_DISTINCT:
        return f"it has fewer than {MIN_DISTINCT} different characters"
    if estimated_bits(without_runs(text)) < MIN_BITS:
        return (
            f"its estimated entropy is under {MIN_BITS:g} bits, runs of repeated or "
            "consecutive characters not counted"
        )
    return None


def without_runs(text: str) -> str:
    """*text* without its runs of 4 or more repeated or consecutive characters (``aaaa``,
    ``abcd``, ``4321``), which add next to nothing to a guesser's work."""
    keep = [True] * len(text)
    start = 0
    while start < len(text) - 1:
        step = ord(text[start + 1]) - ord(text[start])
        end = start + 1
        if abs(step) <= 1:
            while end + 1 < len(text) and ord(text[end + 1]) - ord(text[end]) == step:
                end += 1
            if end - start >= 3:
                keep[start : end + 1] = [False] * (end - start + 1)
                start = end + 1
                continue
        start += 1
    return "".join(c for c, kept in zip(text, keep, strict=True) if kept)

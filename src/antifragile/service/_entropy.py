"""How guessable a configured key is: a cheap estimate, to refuse ``aaaaaaaaaaaaaaaa``.

:func:`weakness` estimates a key's entropy as its length times the Shannon entropy of its
characters (bits per character, from their frequencies), and refuses keys under
:data:`MIN_BITS`, with fewer than :data:`MIN_DISTINCT` distinct characters, or made mostly of
runs (``abcdef``, ``123456``, ``aaaa``). It is an estimate from the text alone: a key drawn at
random (``openssl rand -base64 24``, ``python -c "import secrets; print(secrets.token_urlsafe())"``)
passes by far; a short phrase may pass and still be guessable.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter

#: the least estimated entropy of a key (bits)
MIN_BITS = 48.0
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
    if _in_runs(text) * 2 > len(text):
        return "it is mostly runs of repeated or consecutive characters"
    if estimated_bits(text) < MIN_BITS:
        return f"its estimated entropy is under {MIN_BITS:g} bits"
    return None


def _in_runs(text: str) -> int:
    """How many characters of *text* are in runs of 4 or more repeated or consecutive ones
    (``aaaa``, ``abcd``, ``4321``)."""
    total = 0
    length = 1
    last_step: int | None = None
    for a, b in itertools.pairwise(text):
        step = ord(b) - ord(a)
        if abs(step) <= 1 and step == last_step:
            length += 1
        else:
            total += length if length >= 4 else 0
            length = 2 if abs(step) <= 1 else 1
        last_step = step
    return total + (length if length >= 4 else 0)

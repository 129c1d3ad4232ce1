"""Local stand-ins for the providers antifragile talks to, with faults on cue.

:class:`FlakyServer` is a real HTTP/1.1 server on ``127.0.0.1`` whose answers are scripted per
request (:class:`Fault`), drawn at random (:class:`Chaos`), limited by a provider-side rate
limit (:class:`Quota`) or played as a timeline (:class:`Phase`). Tests, the demo and the
benchmarks use it to make a provider fail the way providers do: 5xx bursts, 429 with
``Retry-After``, slow answers, resets, hangs and outages.
"""

from antifragile.sandbox._faults import Chaos, Fault, FaultKind, Phase, Quota
from antifragile.sandbox._server import FlakyServer, RecordedRequest

__all__ = ["Chaos", "Fault", "FaultKind", "FlakyServer", "Phase", "Quota", "RecordedRequest"]

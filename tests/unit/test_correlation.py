"""The correlation token a send carries: stable, free of personal data, fit for every channel."""

from __future__ import annotations

import re

import pytest

from antifragile import ConfigurationError
from antifragile.connectors import correlation_for, is_correlation
from antifragile.connectors._correlation import status_callback_url, with_ref


def test_the_correlation_is_a_stable_digest_of_the_key() -> None:
    """The same key gives the same token in any process; different keys differ; the token
    shows nothing of the key and fits Resend's tag charset."""
    key = "send-email/welcome/ada@example.com"
    token = correlation_for(key)
    assert token == correlation_for(key)
    assert token != correlation_for(key + "x")
    assert "ada" not in token
    assert "example" not in token
    assert re.fullmatch(r"[A-Za-z0-9_-]{1,256}", token)
    assert is_correlation(token)
    assert not is_correlation("af_" + "z" * 32)
    assert not is_correlation(None)
    with pytest.raises(ConfigurationError):
        correlation_for("")


def test_the_ref_goes_into_the_query_before_any_fragment() -> None:
    """``ref=`` joins an existing query with ``&``, starts one with ``?``, and stays before a
    ``#`` fragment (Twilio's connection overrides); the Twilio callback is the service's
    Twilio webhook under the public URL."""
    assert with_ref("https://a.example/s", "af_1") == "https://a.example/s?ref=af_1"
    assert with_ref("https://a.example/s?x=1", "af_1") == "https://a.example/s?x=1&ref=af_1"
    assert with_ref("https://a.example/s#rc=2", "af_1") == "https://a.example/s?ref=af_1#rc=2"
    assert (
        status_callback_url("https://svc.example/base/", "af_1")
        == "https://svc.example/base/v1/webhooks/twilio?ref=af_1"
    )

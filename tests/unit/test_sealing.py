"""Sealing: personal parts of records encrypted under the first data key, opened by any; a
record no configured key opens is an error that says so; nothing changes without a key."""

from __future__ import annotations

import pytest

from antifragile import ConfigurationError
from antifragile.inbound import Channel, EventKind, InboundEvent
from antifragile.inbound._sealing import is_sealed, seal, unseal, unseal_all
from antifragile.inbound._session_record import SessionRecord

NEW, OLD = "new-key-7f3a9c1e5b2d4f60a8e2c4b6", "old-key-1d2c3b4a59687f6e5d4c3b2a"


def test_without_a_key_nothing_is_sealed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANTIFRAGILE_DATA_KEYS", raising=False)
    assert seal("447700900123") == "447700900123"
    assert unseal({"a": 1}) == {"a": 1}


def test_the_first_key_seals_and_every_key_opens(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTIFRAGILE_DATA_KEYS", OLD)
    sealed_by_old = seal({"phone": "447700900123"})
    assert is_sealed(sealed_by_old)
    assert "447700900123" not in str(sealed_by_old)

    monkeypatch.setenv("ANTIFRAGILE_DATA_KEYS", f"{NEW},{OLD}")  # rotated: new key first
    assert unseal(sealed_by_old) == {"phone": "447700900123"}
    sealed_by_new = seal("ada@example.com")
    assert unseal_all({"x": [sealed_by_new]}) == {"x": ["ada@example.com"]}

    monkeypatch.setenv("ANTIFRAGILE_DATA_KEYS", NEW)  # the old key dropped too early
    with pytest.raises(ConfigurationError, match="no key in ANTIFRAGILE_DATA_KEYS opens"):
        unseal(sealed_by_old)
    monkeypatch.delenv("ANTIFRAGILE_DATA_KEYS")
    with pytest.raises(ConfigurationError, match="ANTIFRAGILE_DATA_KEYS is not set"):
        unseal(sealed_by_new)


def test_inbox_events_and_session_records_round_trip_sealed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ANTIFRAGILE_DATA_KEYS", NEW)
    event = InboundEvent(
        Channel.WHATSAPP,
        "wamid.1",
        EventKind.MESSAGE,
        "1234",
        sender="447700900123",
        text="I am Ada",
        data={"profile_name": "Ada"},
    )
    stored = event.to_sealed_json()
    assert "447700900123" not in str(stored)
    assert "Ada" not in str(stored)
    assert InboundEvent.from_json(stored) == event
    record = SessionRecord(
        key="session:shop:x",
        tenant_id="shop",
        flow="intake",
        channel="whatsapp",
        phone="447700900123",
        fields={"name": "Ada"},
    )
    stored_record = record.to_stored_json()
    assert "447700900123" not in str(stored_record)
    assert "Ada" not in str(stored_record)
    assert SessionRecord.from_json(stored_record) == record

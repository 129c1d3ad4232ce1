"""Personal data in payloads: found by field name and by value shape, replaced by references
that are the same for every spelling of one person; timestamps and ids are left alone."""

from __future__ import annotations

import pytest

from antifragile.jobs import JobContext
from antifragile.jobs._payload import PayloadCodec
from antifragile.observability import mask_pii, personal_key, pseudonymise, reference


@pytest.mark.parametrize(
    "name",
    [
        "email",
        "e_mail",
        "customerEmail",
        "customer-email",
        "phone_number",
        "phoneNumber",
        "mobile",
        "msisdn",
        "name",
        "full_name",
        "FirstName",
        "surname",
        "address",
        "street",
        "postcode",
        "dob",
        "birth_date",
    ],
)
def test_fields_named_for_a_person_are_personal(name: str) -> None:
    assert personal_key(name)


@pytest.mark.parametrize(
    "name",
    [
        "tenant_name",
        "job_name",
        "hostname",
        "filename",
        "email_status",
        "phone_number_id",
        "summary_email_sent",
        "quantity",
        "idempotency_key",
        "created_at",
    ],
)
def test_fields_about_things_are_not(name: str) -> None:
    assert not personal_key(name)


def test_values_are_replaced_at_any_depth_and_timestamps_are_kept() -> None:
    payload = {
        "customer_email": "Ada@Example.com",
        "contact": {"details": [{"phone_number": 447700900123}]},
        "note": "reach me on %2B447700900123, +44 7700 900123 or ada@example.com",
        "at": 1765111111,
        "id": "447700900123",
        "when": "1765111111.25",
        "done": True,
    }
    out = pseudonymise(payload)
    ref_email, ref_phone = reference("ada@example.com"), reference("+447700900123")
    assert out["customer_email"] == ref_email
    assert out["contact"]["details"][0]["phone_number"] == ref_phone
    assert out["note"] == f"reach me on {ref_phone}, {ref_phone} or {ref_email}"
    assert (out["at"], out["id"], out["when"], out["done"]) == (
        1765111111,
        "447700900123",  # a bare run of digits outside a phone field: an id, kept
        "1765111111.25",
        True,
    )
    assert pseudonymise(out) == out  # references stay references
    clean = {"order": "1001", "items": [1, 2]}
    assert pseudonymise(clean) is clean


def test_references_are_keyed_by_the_current_data_key(monkeypatch: pytest.MonkeyPatch) -> None:
    unkeyed = reference("+447700900123")
    monkeypatch.setenv("ANTIFRAGILE_DATA_KEYS", "key-one-0123456789abcdef, key-old")
    keyed = reference("whatsapp:+447700900123")
    assert keyed != unkeyed
    assert keyed == reference("447700900123", key=b"key-one-0123456789abcdef")


def test_every_job_payload_is_pseudonymised_at_enqueue() -> None:
    async def send(ctx: JobContext, to: str | list[str], order: int) -> None: ...

    codec = PayloadCodec(send, "send")
    assert codec.encode(("ada@example.com", 7), {}) == {
        "to": reference("ada@example.com"),
        "order": 7,
    }
    assert codec.encode((), {"to": ["ada@example.com"], "order": 7}) == {
        "to": [reference("ada@example.com")],
        "order": 7,
    }


def test_url_encoded_phone_numbers_and_emails_are_masked_in_logs() -> None:
    line = "GET /v1/x?from=%2B447700900123&e=ada%40example.com HTTP/1.1"
    masked = mask_pii(line)
    assert "447700900123" not in masked
    assert "ada%40example.com" not in masked
    assert "from=+4477" in masked


def test_lookup_hashes_follow_the_data_keys_as_they_change(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The keys' variable is parsed once per value, yet read on every call: a key rotated in
    (or removed) applies to the very next hash, and a value seen before gives its keys again."""
    import hashlib
    import hmac

    from antifragile.observability._personal import (
        current_data_key,
        current_lookup_hash,
        data_keys,
        lookup_hashes,
    )

    def keyed(key: bytes) -> str:
        return hmac.new(key, b"limit\x00+447700900123", hashlib.sha256).hexdigest()

    unkeyed = hashlib.sha256(b"+447700900123").hexdigest()
    monkeypatch.delenv("ANTIFRAGILE_DATA_KEYS", raising=False)
    assert current_data_key() is None
    assert current_lookup_hash("limit", "+447700900123") == unkeyed
    monkeypatch.setenv("ANTIFRAGILE_DATA_KEYS", " key-one ,")
    assert data_keys() == [b"key-one"]
    assert current_lookup_hash("limit", "+447700900123") == keyed(b"key-one")
    monkeypatch.setenv("ANTIFRAGILE_DATA_KEYS", "key-two, key-one")
    assert current_data_key() == b"key-two"
    assert current_lookup_hash("limit", "+447700900123") == keyed(b"key-two")
    assert lookup_hashes("limit", "+447700900123") == [
        keyed(b"key-two"),
        keyed(b"key-one"),
        unkeyed,
    ]
    keys = data_keys()
    keys.append(b"mutated")  # a caller's list of its own: the next call is not affected
    assert data_keys() == [b"key-two", b"key-one"]
    monkeypatch.setenv("ANTIFRAGILE_DATA_KEYS", " key-one ,")
    assert current_lookup_hash("limit", "+447700900123") == keyed(b"key-one")
    assert data_keys({"ANTIFRAGILE_DATA_KEYS": "other"}) == [b"other"]
    monkeypatch.setenv("ANTIFRAGILE_DATA_KEYS", "")
    assert current_lookup_hash("limit", "+447700900123") == unkeyed

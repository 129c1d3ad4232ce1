"""Contract: IdempotencyStore -- claim, complete, get and release, with expiry and fingerprints."""

from __future__ import annotations

import asyncio

import pytest

from antifragile import ConfigurationError, FakeClock
from antifragile.stores import IdempotencyRecord, IdempotencyStatus, Store

PROCESSING = IdempotencyStatus.PROCESSING
SUCCEEDED = IdempotencyStatus.SUCCEEDED
FAILED = IdempotencyStatus.FAILED


async def test_claim_of_a_new_key_acquires_it(store: Store, clock: FakeClock) -> None:
    """The first claim acquires the key: a processing record owned by the claimant."""
    now = clock.time()
    claim = await store.idempotency.claim("k", owner="w1", now=now, ttl=30, fingerprint="fp")
    expected = IdempotencyRecord(
        key="k",
        status=PROCESSING,
        owner="w1",
        fingerprint="fp",
        result=None,
        created_at=now,
        expires_at=now + 30,
    )
    assert claim.acquired is True
    assert claim.record == expected
    assert claim.fingerprint == "fp"
    assert claim.fingerprint_mismatch is False
    assert await store.idempotency.get("k", now=now) == expected


async def test_get_of_unknown_key_is_none(store: Store, clock: FakeClock) -> None:
    """get of a key never claimed is None."""
    assert await store.idempotency.get("missing", now=clock.time()) is None


async def test_a_live_claim_is_not_acquired_again(store: Store, clock: FakeClock) -> None:
    """A second claim, by anyone, does not acquire a live key and sees the first record."""
    now = clock.time()
    first = await store.idempotency.claim("k", owner="w1", now=now, ttl=30)
    clock.advance(10)
    for owner in ("w2", "w1"):
        again = await store.idempotency.claim("k", owner=owner, now=clock.time(), ttl=30)
        assert again.acquired is False
        assert again.record == first.record


async def test_status_is_a_string_enum(store: Store, clock: FakeClock) -> None:
    """Records carry IdempotencyStatus members, equal to their string values."""
    claim = await store.idempotency.claim("k", owner="w", now=clock.time(), ttl=5)
    assert isinstance(claim.record.status, IdempotencyStatus)
    assert claim.record.status == "processing"


async def test_complete_stores_the_outcome(store: Store, clock: FakeClock) -> None:
    """complete by the owner stores status and result, keeps created_at, sets the new expiry."""
    start = clock.time()
    await store.idempotency.claim("k", owner="w1", now=start, ttl=30, fingerprint="fp")
    clock.advance(3)
    done = clock.time()
    result = {"id": 7, "items": ["a", "ü"]}
    assert await store.idempotency.complete(
        "k", owner="w1", status=SUCCEEDED, result=result, now=done, ttl=3600
    )
    assert await store.idempotency.get("k", now=done) == IdempotencyRecord(
        key="k",
        status=SUCCEEDED,
        owner="w1",
        fingerprint="fp",
        result=result,
        created_at=start,
        expires_at=done + 3600,
    )


async def test_a_stored_outcome_answers_duplicates(store: Store, clock: FakeClock) -> None:
    """A claim of a completed key is not acquired and carries the stored outcome."""
    now = clock.time()
    await store.idempotency.claim("k", owner="w1", now=now, ttl=30)
    await store.idempotency.complete(
        "k", owner="w1", status=SUCCEEDED, result={"ok": 1}, now=now, ttl=60
    )
    clock.advance(59)
    duplicate = await store.idempotency.claim("k", owner="w2", now=clock.time(), ttl=30)
    assert duplicate.acquired is False
    assert duplicate.record.status is SUCCEEDED
    assert duplicate.record.result == {"ok": 1}


async def test_a_failed_outcome_is_stored_too(store: Store, clock: FakeClock) -> None:
    """complete with status failed stores the failure and its result like a success."""
    now = clock.time()
    await store.idempotency.claim("k", owner="w1", now=now, ttl=30)
    assert await store.idempotency.complete(
        "k", owner="w1", status=FAILED, result="card declined", now=now, ttl=60
    )
    record = await store.idempotency.get("k", now=now)
    assert record is not None
    assert (record.status, record.result) == (FAILED, "card declined")


async def test_complete_by_a_non_owner_is_refused(store: Store, clock: FakeClock) -> None:
    """complete by anyone but the claim's owner returns False and changes nothing."""
    now = clock.time()
    claim = await store.idempotency.claim("k", owner="w1", now=now, ttl=30)
    assert not await store.idempotency.complete(
        "k", owner="w2", status=SUCCEEDED, result=1, now=now, ttl=60
    )
    assert await store.idempotency.get("k", now=now) == claim.record


async def test_complete_of_an_unclaimed_key_is_refused(store: Store, clock: FakeClock) -> None:
    """complete of a key nobody claimed returns False and creates nothing."""
    now = clock.time()
    assert not await store.idempotency.complete("k", owner="w1", status=SUCCEEDED, now=now, ttl=60)
    assert await store.idempotency.get("k", now=now) is None


async def test_complete_twice_is_refused(store: Store, clock: FakeClock) -> None:
    """A completed record is no longer a held claim: a second complete returns False."""
    now = clock.time()
    await store.idempotency.claim("k", owner="w1", now=now, ttl=30)
    assert await store.idempotency.complete(
        "k", owner="w1", status=SUCCEEDED, result=1, now=now, ttl=60
    )
    assert not await store.idempotency.complete(
        "k", owner="w1", status=FAILED, result=2, now=now, ttl=600
    )
    record = await store.idempotency.get("k", now=now)
    assert record is not None
    assert (record.status, record.result, record.expires_at) == (SUCCEEDED, 1, now + 60)


async def test_complete_after_the_claim_expired_is_refused(store: Store, clock: FakeClock) -> None:
    """A claim that expired before complete is lost: complete returns False."""
    await store.idempotency.claim("k", owner="w1", now=clock.time(), ttl=5)
    clock.advance(5)
    assert not await store.idempotency.complete(
        "k", owner="w1", status=SUCCEEDED, now=clock.time(), ttl=60
    )
    assert await store.idempotency.get("k", now=clock.time()) is None


async def test_complete_with_status_processing_is_refused(store: Store, clock: FakeClock) -> None:
    """complete must store an outcome: status processing raises ConfigurationError."""
    now = clock.time()
    claim = await store.idempotency.claim("k", owner="w1", now=now, ttl=30)
    with pytest.raises(ConfigurationError):
        await store.idempotency.complete("k", owner="w1", status=PROCESSING, now=now, ttl=60)
    assert await store.idempotency.get("k", now=now) == claim.record


async def test_complete_with_a_non_json_result_is_refused(store: Store, clock: FakeClock) -> None:
    """A result JSON cannot encode raises ConfigurationError; the claim stays processing."""
    now = clock.time()
    claim = await store.idempotency.claim("k", owner="w1", now=now, ttl=30)
    with pytest.raises(ConfigurationError):
        await store.idempotency.complete(
            "k", owner="w1", status=SUCCEEDED, result=object(), now=now, ttl=60
        )
    assert await store.idempotency.get("k", now=now) == claim.record
    assert await store.idempotency.complete("k", owner="w1", status=SUCCEEDED, now=now, ttl=60)


async def test_an_expired_claim_can_be_acquired_again(store: Store, clock: FakeClock) -> None:
    """Once a processing claim expires, another owner acquires it; the first owner lost it."""
    await store.idempotency.claim("k", owner="w1", now=clock.time(), ttl=5, fingerprint="a")
    clock.advance(4.5)
    assert await store.idempotency.get("k", now=clock.time()) is not None
    clock.advance(0.5)
    now = clock.time()
    assert await store.idempotency.get("k", now=now) is None
    again = await store.idempotency.claim("k", owner="w2", now=now, ttl=5, fingerprint="b")
    assert again.acquired is True
    assert again.record == IdempotencyRecord("k", PROCESSING, "w2", "b", None, now, now + 5)
    assert not await store.idempotency.complete("k", owner="w1", status=SUCCEEDED, now=now, ttl=60)
    assert await store.idempotency.complete("k", owner="w2", status=SUCCEEDED, now=now, ttl=60)


async def test_an_expired_outcome_can_be_acquired_again(store: Store, clock: FakeClock) -> None:
    """After a stored outcome's retention ends the key is claimable afresh, result cleared."""
    now = clock.time()
    await store.idempotency.claim("k", owner="w1", now=now, ttl=5)
    await store.idempotency.complete("k", owner="w1", status=SUCCEEDED, result=1, now=now, ttl=10)
    clock.advance(10)
    again = await store.idempotency.claim("k", owner="w1", now=clock.time(), ttl=5)
    assert again.acquired is True
    assert again.record.status is PROCESSING
    assert again.record.result is None
    assert again.record.created_at == clock.time()


async def test_release_by_the_owner_frees_the_key(store: Store, clock: FakeClock) -> None:
    """release by the owner of a processing claim drops it, so the key is claimable at once."""
    now = clock.time()
    await store.idempotency.claim("k", owner="w1", now=now, ttl=30)
    assert await store.idempotency.release("k", owner="w1") is True
    assert await store.idempotency.get("k", now=now) is None
    assert (await store.idempotency.claim("k", owner="w2", now=now, ttl=30)).acquired
    assert await store.idempotency.release("k", owner="w1") is False


async def test_release_by_a_non_owner_is_refused(store: Store, clock: FakeClock) -> None:
    """release by anyone but the owner returns False and the claim stays."""
    now = clock.time()
    claim = await store.idempotency.claim("k", owner="w1", now=now, ttl=30)
    assert await store.idempotency.release("k", owner="w2") is False
    assert await store.idempotency.get("k", now=now) == claim.record


async def test_release_of_unknown_key_is_false(store: Store, clock: FakeClock) -> None:
    """release of a key nobody claimed returns False."""
    assert await store.idempotency.release("missing", owner="w1") is False


async def test_release_keeps_a_stored_outcome(store: Store, clock: FakeClock) -> None:
    """release does not drop a completed record: duplicates must still see its outcome."""
    now = clock.time()
    await store.idempotency.claim("k", owner="w1", now=now, ttl=30)
    await store.idempotency.complete("k", owner="w1", status=SUCCEEDED, result=5, now=now, ttl=60)
    assert await store.idempotency.release("k", owner="w1") is False
    record = await store.idempotency.get("k", now=now)
    assert record is not None
    assert record.result == 5


async def test_a_different_fingerprint_is_flagged(store: Store, clock: FakeClock) -> None:
    """A key reused with another fingerprint is not acquired and flags fingerprint_mismatch."""
    now = clock.time()
    await store.idempotency.claim("k", owner="w1", now=now, ttl=30, fingerprint="body-a")
    other = await store.idempotency.claim("k", owner="w2", now=now, ttl=30, fingerprint="body-b")
    assert other.acquired is False
    assert other.fingerprint == "body-b"
    assert other.record.fingerprint == "body-a"
    assert other.fingerprint_mismatch is True


async def test_same_or_missing_fingerprint_is_not_flagged(store: Store, clock: FakeClock) -> None:
    """The same fingerprint, or no fingerprint on either side, is not a mismatch."""
    now = clock.time()
    await store.idempotency.claim("k", owner="w1", now=now, ttl=30, fingerprint="body-a")
    same = await store.idempotency.claim("k", owner="w2", now=now, ttl=30, fingerprint="body-a")
    unknown = await store.idempotency.claim("k", owner="w2", now=now, ttl=30)
    assert not same.fingerprint_mismatch
    assert not unknown.fingerprint_mismatch
    await store.idempotency.claim("n", owner="w1", now=now, ttl=30)
    later = await store.idempotency.claim("n", owner="w2", now=now, ttl=30, fingerprint="x")
    assert later.record.fingerprint is None
    assert not later.fingerprint_mismatch


async def test_keys_are_independent(store: Store, clock: FakeClock) -> None:
    """Claiming one key does not affect another."""
    now = clock.time()
    await store.idempotency.claim("a", owner="w1", now=now, ttl=30)
    assert (await store.idempotency.claim("b", owner="w2", now=now, ttl=30)).acquired


async def test_concurrent_claims_have_one_winner(store: Store, clock: FakeClock) -> None:
    """50 concurrent claimers of one key: exactly one acquires; all see the winner's record."""
    now = clock.time()
    claims = await asyncio.gather(
        *(store.idempotency.claim("k", owner=f"w{i}", now=now, ttl=30) for i in range(50))
    )
    winners = [c for c in claims if c.acquired]
    assert len(winners) == 1
    owner = winners[0].record.owner
    assert all(c.record.owner == owner for c in claims)
    stored = await store.idempotency.get("k", now=now)
    assert stored is not None
    assert stored.owner == owner


async def test_concurrent_claims_of_an_expired_key_have_one_winner(
    store: Store, clock: FakeClock
) -> None:
    """After a claim expires, 50 concurrent claimers again produce exactly one owner."""
    await store.idempotency.claim("k", owner="old", now=clock.time(), ttl=1)
    clock.advance(1)
    now = clock.time()
    claims = await asyncio.gather(
        *(store.idempotency.claim("k", owner=f"w{i}", now=now, ttl=30) for i in range(50))
    )
    assert sum(c.acquired for c in claims) == 1
    assert {c.record.owner for c in claims} == {next(c for c in claims if c.acquired).record.owner}


async def test_concurrent_completes_have_one_winner(store: Store, clock: FakeClock) -> None:
    """20 concurrent complete calls by the owner: exactly one stores its result."""
    now = clock.time()
    await store.idempotency.claim("k", owner="w", now=now, ttl=30)
    done = await asyncio.gather(
        *(
            store.idempotency.complete("k", owner="w", status=SUCCEEDED, result=i, now=now, ttl=60)
            for i in range(20)
        )
    )
    assert sum(done) == 1
    record = await store.idempotency.get("k", now=now)
    assert record is not None
    assert record.result == done.index(True)


async def test_scan_lists_live_records_by_prefix_in_key_order_and_delete_drops_any(
    store: Store, clock: FakeClock
) -> None:
    """scan returns the live records whose key starts with the prefix (``""``: all), in key
    order, at most *limit*; expired ones are not listed. delete drops a record whatever its
    state (processing or completed) and says whether there was one. Keys with the characters
    a backend escapes ({, }, %, *) are listed as written."""
    idem = store.idempotency
    now = clock.time()
    keys = ["mail:b", "mail:a{1}", "mail:%*", "sms:1"]
    for key in keys:
        await idem.claim(key, owner="w1", now=now, ttl=60)
    await idem.complete("mail:b", owner="w1", status=SUCCEEDED, result={"n": 1}, now=now, ttl=60)
    await idem.claim("mail:old", owner="w1", now=now - 120, ttl=60)  # expired

    listed = await idem.scan("mail:", now=now)
    assert [r.key for r in listed] == sorted(["mail:b", "mail:a{1}", "mail:%*"])
    assert next(r for r in listed if r.key == "mail:b").result == {"n": 1}
    assert [r.key for r in await idem.scan("", now=now, limit=2)] == sorted(keys)[:2]
    assert await idem.scan("", now=now, limit=0) == []

    assert await idem.delete("mail:b") is True  # completed
    assert await idem.delete("mail:a{1}") is True  # processing
    assert await idem.delete("mail:b") is False
    assert await idem.get("mail:b", now=now) is None
    assert [r.key for r in await idem.scan("", now=now)] == ["mail:%*", "sms:1"]
    # a deleted key may be claimed afresh
    assert (await idem.claim("mail:b", owner="w2", now=now, ttl=60)).acquired

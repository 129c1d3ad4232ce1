"""Integration: the Redis backend against a real Redis server.

What the contract suite cannot see from the outside: one round trip per operation, scripts
loaded once and recovered after the server forgets them, exactly-once outcomes with several OS
processes on one server, native expiry as garbage collection, hash slots, and a clear
StoreUnavailableError when the server cannot be reached.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import pytest
import redis
import redis.asyncio
from redis.asyncio.connection import Connection
from redis.crc import key_slot

from antifragile import FakeClock, TokenBucket
from antifragile.errors import ConfigurationError, RateLimitedError, StoreUnavailableError
from antifragile.stores import BreakerRecord, IdempotencyStatus, Store, TokenGrant, make_store
from antifragile.stores._redis import _SCRIPTS, RedisStore

NOW = 1_700_000_000.0
MARGIN_MS = 60_000

# -- fixtures ----------------------------------------------------------------------------------


def _prefix() -> str:
    return f"it{uuid.uuid4().hex[:12]}:"


@pytest.fixture
async def store(redis_url: str, clock: FakeClock) -> AsyncIterator[RedisStore]:
    opened = RedisStore(redis_url, clock=clock, prefix=_prefix(), flush_prefix_on_close=True)
    await opened.open()
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
async def raw(redis_url: str) -> AsyncIterator[redis.asyncio.Redis]:
    """A plain client on the same database, to look at what the store wrote."""
    client = redis.asyncio.Redis.from_url(redis_url, decode_responses=True)
    try:
        yield client
    finally:
        await client.aclose()


async def _keys(raw: redis.asyncio.Redis, prefix: str) -> list[str]:
    return sorted([key async for key in raw.scan_iter(match=f"{prefix}*", count=1000)])


# -- counting round trips on the wire ------------------------------------------------------------


def _parse_packed(command: Any) -> list[str]:
    """The command names in one packet of RESP arrays (``SCRIPT LOAD`` as two words)."""
    if isinstance(command, str):
        data = command.encode()
    elif isinstance(command, bytes | bytearray | memoryview):
        data = bytes(command)
    else:
        data = b"".join(bytes(chunk) for chunk in command)
    names: list[str] = []
    pos = 0
    while pos < len(data):
        assert data[pos : pos + 1] == b"*"
        end = data.index(b"\r\n", pos)
        count, pos = int(data[pos + 1 : end]), end + 2
        args: list[bytes] = []
        for _ in range(count):
            end = data.index(b"\r\n", pos)
            length, pos = int(data[pos + 1 : end]), end + 2
            args.append(data[pos : pos + length])
            pos += length + 2
        name = args[0].decode().upper()
        if name in ("SCRIPT", "CLIENT") and len(args) > 1:
            name = f"{name} {args[1].decode().upper()}"
        names.append(name)
    return names


@dataclass
class Wire:
    """Every packet this process sends to Redis: one entry per round trip."""

    trips: list[list[str]] = field(default_factory=list)

    def reset(self) -> None:
        self.trips.clear()

    def commands(self) -> list[str]:
        return [name for trip in self.trips for name in trip]


@pytest.fixture
def wire(monkeypatch: pytest.MonkeyPatch) -> Wire:
    recorded = Wire()
    original = Connection.send_packed_command

    async def counting(self: Connection, command: Any, check_health: bool = True) -> None:
        recorded.trips.append(_parse_packed(command))
        await original(self, command, check_health)

    monkeypatch.setattr(Connection, "send_packed_command", counting)
    return recorded


Operation = Callable[[RedisStore], Awaitable[object]]


async def _prepare(s: RedisStore) -> None:
    """State for the operations below to act on (so none of them takes a shortcut)."""
    await s.kv.set("k", {"a": 1}, now=NOW)
    await s.kv.set("k2", 2, now=NOW, ttl=30)
    await s.idempotency.claim("i", owner="me", now=NOW, ttl=30)
    await s.idempotency.claim("i2", owner="me", now=NOW, ttl=30)
    await s.leases.acquire("l", owner="me", now=NOW, ttl=30)
    await s.breakers.add_outcomes("b", second=100, calls=1, failures=1, slow=0, window=10)


OPERATIONS: dict[str, tuple[str, Operation]] = {
    "kv.get": ("HMGET", lambda s: s.kv.get("k", now=NOW)),
    "kv.set": ("EVALSHA", lambda s: s.kv.set("k", {"a": 2}, now=NOW, ttl=30)),
    "kv.compare_and_set": (
        "EVALSHA",
        lambda s: s.kv.compare_and_set("k", 3, expected_version=1, now=NOW),
    ),
    "kv.merge": ("EVALSHA", lambda s: s.kv.merge("k", {"b": 2}, now=NOW)),
    "kv.delete": ("EVALSHA", lambda s: s.kv.delete("k2", now=NOW)),
    "kv.scan": ("EVALSHA", lambda s: s.kv.scan("k", now=NOW)),
    "idempotency.claim": (
        "EVALSHA",
        lambda s: s.idempotency.claim("new", owner="me", now=NOW, ttl=30),
    ),
    "idempotency.complete": (
        "EVALSHA",
        lambda s: s.idempotency.complete(
            "i", owner="me", status=IdempotencyStatus.SUCCEEDED, result=[1], now=NOW, ttl=60
        ),
    ),
    "idempotency.get": ("HMGET", lambda s: s.idempotency.get("i", now=NOW)),
    "idempotency.release": ("EVALSHA", lambda s: s.idempotency.release("i2", owner="me")),
    "leases.acquire": ("EVALSHA", lambda s: s.leases.acquire("l2", owner="me", now=NOW, ttl=9)),
    "leases.renew": ("EVALSHA", lambda s: s.leases.renew("l", owner="me", now=NOW, ttl=9)),
    "leases.release": ("EVALSHA", lambda s: s.leases.release("l", owner="me")),
    "leases.holder": ("HMGET", lambda s: s.leases.holder("l", now=NOW)),
    "rate_limits.take": (
        "EVALSHA",
        lambda s: s.rate_limits.take("r", tokens=1, rate=5, burst=5, max_wait=1, now=NOW),
    ),
    "rate_limits.pause": (
        "EVALSHA",
        lambda s: s.rate_limits.pause("r", seconds=3, rate=5, burst=5, now=NOW),
    ),
    "breakers.load": ("EVALSHA", lambda s: s.breakers.load("b")),
    "breakers.compare_and_set": (
        "EVALSHA",
        lambda s: s.breakers.compare_and_set(BreakerRecord("b"), BreakerRecord("b", "open", 1)),
    ),
    "breakers.add_outcomes": (
        "EVALSHA",
        lambda s: s.breakers.add_outcomes("b", second=101, calls=1, failures=0, slow=0, window=9),
    ),
    "breakers.reset_window": ("DEL", lambda s: s.breakers.reset_window("b")),
    "ping": ("PING", lambda s: s.ping()),
}


@pytest.mark.parametrize("name", list(OPERATIONS))
async def test_every_operation_is_one_round_trip(store: RedisStore, wire: Wire, name: str) -> None:
    """Each store operation sends exactly one command in exactly one round trip."""
    command, operation = OPERATIONS[name]
    await _prepare(store)
    wire.reset()
    await operation(store)
    assert wire.trips == [[command]]


# -- scripts -----------------------------------------------------------------------------------


async def test_scripts_are_loaded_once_when_the_store_opens(redis_url: str, wire: Wire) -> None:
    """open loads every script in one round trip; afterwards only EVALSHA is sent, never EVAL."""
    s = RedisStore(redis_url, prefix=_prefix(), flush_prefix_on_close=True)
    await s.open()
    try:
        loading = [trip for trip in wire.trips if "SCRIPT LOAD" in trip]
        assert len(loading) == 1
        assert loading[0].count("SCRIPT LOAD") == len(_SCRIPTS)
        wire.reset()
        for _ in range(3):
            await _prepare(s)
            for _, operation in OPERATIONS.values():
                await operation(s)
        sent = wire.commands()
        assert "SCRIPT LOAD" not in sent
        assert "EVAL" not in sent
        assert sent.count("EVALSHA") > 3 * len(_SCRIPTS)
    finally:
        await s.close()


async def test_scripts_survive_script_flush(
    store: RedisStore, raw: redis.asyncio.Redis, wire: Wire
) -> None:
    """After SCRIPT FLUSH the next call reloads its script (NOSCRIPT fallback) and succeeds."""
    first = await store.leases.acquire("l", owner="a", now=NOW, ttl=10)
    assert first is not None
    await raw.script_flush()
    wire.reset()
    second = await store.leases.acquire("l", owner="b", now=NOW + 10, ttl=10)
    assert second is not None
    assert second.token == first.token + 1
    assert wire.trips == [["EVALSHA"], ["SCRIPT LOAD"], ["EVALSHA"]]
    wire.reset()
    third = await store.leases.acquire("l", owner="b", now=NOW + 11, ttl=10)
    assert third == replace(second, expires_at=NOW + 21)
    assert wire.trips == [["EVALSHA"]]
    # every other script recovers the same way, one reload each
    await raw.script_flush()
    wire.reset()
    await _prepare(store)
    for _, operation in OPERATIONS.values():
        await operation(store)
    assert wire.commands().count("SCRIPT LOAD") <= len(_SCRIPTS)


# -- several processes -------------------------------------------------------------------------

PROCESSES = 4
TASKS = 4
IDEM_KEYS = 40
INCREMENTS = 10  # per task
MERGES = 20  # per process
LEASES = 5  # per task
BURST = 25
TAKES = 20  # per task


async def _hammer(url: str, prefix: str, me: str, barrier: Any) -> dict[str, Any]:
    s = RedisStore(url, prefix=prefix)
    await s.open()

    async def together() -> None:
        await asyncio.to_thread(barrier.wait, 60)

    try:
        out: dict[str, Any] = {}
        # 1. idempotency: everyone claims every key at once; winners complete
        await together()
        claims = await asyncio.gather(
            *(s.idempotency.claim(f"job-{k}", owner=me, now=NOW, ttl=600) for k in range(IDEM_KEYS))
        )
        out["claimed"] = [k for k, c in enumerate(claims) if c.acquired]
        for k in out["claimed"]:
            done = await s.idempotency.complete(
                f"job-{k}",
                owner=me,
                status=IdempotencyStatus.SUCCEEDED,
                result={"by": me},
                now=NOW,
                ttl=600,
            )
            assert done
        await together()
        seen = []
        for k in range(IDEM_KEYS):
            record = await s.idempotency.get(f"job-{k}", now=NOW)
            assert record is not None
            seen.append(record.result["by"])
        out["seen"] = seen

        # 2. a counter incremented with read + compare_and_set loops; concurrent merges
        await together()

        async def bump() -> None:
            for _ in range(INCREMENTS):
                while True:
                    current = await s.kv.get("counter", now=NOW)
                    value = 0 if current is None else current.value
                    version = None if current is None else current.version
                    won = await s.kv.compare_and_set(
                        "counter", value + 1, expected_version=version, now=NOW
                    )
                    if won is not None:
                        break

        await asyncio.gather(*(bump() for _ in range(TASKS)))
        await asyncio.gather(
            *(s.kv.merge("flags", {f"{me}-{j}": j}, now=NOW) for j in range(MERGES))
        )

        # 3. a lease guarding a deliberately non-atomic read-modify-write
        await together()
        tokens: list[int] = []

        async def hold(task: int) -> None:
            owner = f"{me}-t{task}"
            held = 0
            while held < LEASES:
                lease = await s.leases.acquire("singleton", owner=owner, now=NOW, ttl=600)
                if lease is None:
                    await asyncio.sleep(0)
                    continue
                current = await s.kv.get("guarded", now=NOW)
                await asyncio.sleep(0)
                await s.kv.set("guarded", (0 if current is None else current.value) + 1, now=NOW)
                tokens.append(lease.token)
                assert await s.leases.release("singleton", owner=owner)
                held += 1

        await asyncio.gather(*(hold(t) for t in range(TASKS)))
        out["tokens"] = tokens

        # 4. one bucket with no refill to speak of: exactly BURST tokens exist
        await together()
        grants = await asyncio.gather(
            *(
                s.rate_limits.take("bucket", tokens=1, rate=1e-6, burst=BURST, max_wait=0, now=NOW)
                for _ in range(TASKS * TAKES)
            )
        )
        out["granted"] = sum(g.granted for g in grants)
        return out
    finally:
        await s.close()


def _worker(url: str, prefix: str, me: str, barrier: Any, results: Any) -> None:
    try:
        results.put((me, asyncio.run(_hammer(url, prefix, me, barrier))))
    except BaseException as exc:
        barrier.abort()
        results.put((me, f"{type(exc).__name__}: {exc}"))


@dataclass
class Hammered:
    prefix: str
    results: dict[str, dict[str, Any]]


@pytest.fixture(scope="module")
def hammered(redis_url: str) -> Iterator[Hammered]:
    """Four OS processes, four tasks each, contending for the same keys on one server."""
    prefix = _prefix()
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(PROCESSES)
    queue = ctx.Queue()
    names = [f"p{i}" for i in range(PROCESSES)]
    procs = [
        ctx.Process(target=_worker, args=(redis_url, prefix, me, barrier, queue)) for me in names
    ]
    for proc in procs:
        proc.start()
    try:
        results: dict[str, Any] = dict(queue.get(timeout=60) for _ in procs)
        for proc in procs:
            proc.join(timeout=30)
        failures = {me: out for me, out in results.items() if isinstance(out, str)}
        assert not failures, failures
        yield Hammered(prefix, results)
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.kill()
        client = redis.Redis.from_url(redis_url)
        try:
            for key in client.scan_iter(match=f"{prefix}*", count=1000):
                client.unlink(key)
        finally:
            client.close()


@pytest.fixture
async def hammered_store(redis_url: str, hammered: Hammered) -> AsyncIterator[Store]:
    s = RedisStore(redis_url, prefix=hammered.prefix)
    await s.open()
    try:
        yield s
    finally:
        await s.close()


def test_processes_claim_each_idempotency_key_exactly_once(hammered: Hammered) -> None:
    """Across processes every idempotency key is acquired by exactly one, and all see its result."""
    winners: dict[int, str] = {}
    for me, out in hammered.results.items():
        for k in out["claimed"]:
            assert k not in winners, f"job-{k} claimed twice"
            winners[k] = me
    assert sorted(winners) == list(range(IDEM_KEYS))
    expected = [winners[k] for k in range(IDEM_KEYS)]
    assert all(out["seen"] == expected for out in hammered.results.values())


async def test_processes_lose_no_compare_and_set_increment(
    hammered: Hammered, hammered_store: Store
) -> None:
    """Read + compare_and_set loops in several processes add up exactly; merges keep all fields."""
    counter = await hammered_store.kv.get("counter", now=NOW)
    assert counter is not None
    total = PROCESSES * TASKS * INCREMENTS
    assert (counter.value, counter.version) == (total, total)
    flags = await hammered_store.kv.get("flags", now=NOW)
    assert flags is not None
    assert flags.value == {f"p{i}-{j}": j for i in range(PROCESSES) for j in range(MERGES)}
    assert flags.version == PROCESSES * MERGES


async def test_processes_hold_a_lease_one_at_a_time_with_growing_tokens(
    hammered: Hammered, hammered_store: Store
) -> None:
    """A lease excludes every other process: unguarded increments add up, tokens are 1..n."""
    tokens = sorted(t for out in hammered.results.values() for t in out["tokens"])
    total = PROCESSES * TASKS * LEASES
    assert tokens == list(range(1, total + 1))
    guarded = await hammered_store.kv.get("guarded", now=NOW)
    assert guarded is not None
    assert guarded.value == total


def test_processes_share_one_token_bucket(hammered: Hammered) -> None:
    """Processes taking from one bucket at the same instant get exactly burst tokens in all."""
    assert sum(out["granted"] for out in hammered.results.values()) == BURST


# -- native expiry -----------------------------------------------------------------------------


async def test_keys_carry_a_native_expiry_beyond_the_logical_one(
    store: RedisStore, raw: redis.asyncio.Redis
) -> None:
    """Every key gets a PEXPIRE of its logical lifetime plus the margin, except those that must
    outlive any TTL: KV entries without TTL, the KV indexes and the fencing counters."""
    p = store.prefix
    await store.kv.set("ttl", 1, now=NOW, ttl=30)
    await store.kv.set("forever", 1, now=NOW)
    await store.idempotency.claim("claim", owner="o", now=NOW, ttl=30)
    await store.idempotency.claim("done", owner="o", now=NOW, ttl=30)
    await store.idempotency.complete(
        "done", owner="o", status=IdempotencyStatus.FAILED, now=NOW, ttl=3600
    )
    await store.leases.acquire("lease", owner="o", now=NOW, ttl=10)
    await store.rate_limits.take("bucket", tokens=1, rate=2, burst=4, max_wait=0, now=NOW)
    await store.rate_limits.pause("paused", seconds=20, rate=1, burst=3, now=NOW)
    await store.breakers.compare_and_set(BreakerRecord("br"), BreakerRecord("br", "open", 1))
    await store.breakers.add_outcomes("br", second=5, calls=1, failures=1, slow=0, window=10)

    expected_ms = {
        f"{p}{{kv}}:v:ttl": 30_000 + MARGIN_MS,
        f"{p}{{idem:claim}}": 30_000 + MARGIN_MS,
        f"{p}{{idem:done}}": 3_600_000 + MARGIN_MS,
        f"{p}{{lease:lease}}": 10_000 + MARGIN_MS,
        # a bucket expires once it would be full again: 1 token at 2/s, or 20 s + 2 tokens at 1/s
        f"{p}{{rate:bucket}}": 500 + MARGIN_MS,
        f"{p}{{rate:paused}}": 22_000 + MARGIN_MS,
        f"{p}{{breaker:br}}": 30 * 86_400_000,
        f"{p}{{breaker:br}}:w": 10_000 + MARGIN_MS,
    }
    persistent = {
        f"{p}{{kv}}:v:forever",
        f"{p}{{kv}}:index",
        f"{p}{{kv}}:expiry",
        f"{p}{{lease:lease}}:fence",
    }
    assert set(await _keys(raw, p)) == set(expected_ms) | persistent
    for key, ms in expected_ms.items():
        pttl = await raw.pttl(key)
        assert ms - 5_000 < pttl <= ms, key
    for key in persistent:
        assert await raw.pttl(key) == -1, key


async def test_logic_follows_the_callers_clock_not_the_servers(
    store: RedisStore, raw: redis.asyncio.Redis, clock: FakeClock
) -> None:
    """Expiry is decided by the now passed in: an entry is gone at now + ttl while its key still
    has most of its native lifetime left, and a clock far from the server's changes nothing."""
    for start in (clock.time(), 10.0, 4_000_000_000.0):
        await store.kv.set("k", "v", now=start, ttl=5)
        lease = await store.leases.acquire("l", owner="o", now=start, ttl=5)
        assert lease is not None
        assert await store.kv.get("k", now=start + 4.999) is not None
        assert await store.kv.get("k", now=start + 5) is None
        assert await store.leases.holder("l", now=start + 5) is None
        assert await raw.pttl(f"{store.prefix}{{kv}}:v:k") > MARGIN_MS
        assert await store.leases.release("l", owner="o")


async def test_kv_writes_collect_expired_entries(
    store: RedisStore, raw: redis.asyncio.Redis, clock: FakeClock
) -> None:
    """Entries expired for longer than the margin are deleted, index included, by later writes."""
    p = store.prefix
    for i in range(5):
        await store.kv.set(f"old{i}", i, now=clock.time(), ttl=1)
    await store.kv.set("kept", 0, now=clock.time())
    clock.advance(1 + 61)
    await store.kv.set("new", 1, now=clock.time(), ttl=100)
    assert await _keys(raw, f"{p}{{kv}}:v:") == [f"{p}{{kv}}:v:kept", f"{p}{{kv}}:v:new"]
    assert await raw.zrange(f"{p}{{kv}}:index", 0, -1) == ["kept", "new"]
    assert await raw.zrange(f"{p}{{kv}}:expiry", 0, -1) == ["new"]


async def test_scan_skips_and_unindexes_entries_expired_by_redis(
    store: RedisStore, raw: redis.asyncio.Redis
) -> None:
    """An entry whose key Redis already dropped is not listed, and leaves the index."""
    p = store.prefix
    for key in ("s:a", "s:b", "s:c"):
        await store.kv.set(key, key, now=NOW, ttl=30)
    await raw.delete(f"{p}{{kv}}:v:s:b")  # what a native expiry does
    assert [v.key for v in await store.kv.scan("s:", now=NOW)] == ["s:a", "s:c"]
    assert await raw.zrange(f"{p}{{kv}}:index", 0, -1) == ["s:a", "s:c"]


# -- values, names and slots -----------------------------------------------------------------


async def test_merge_keeps_numbers_arrays_and_order_exactly(store: RedisStore) -> None:
    """merge splices JSON text: 17-digit floats, big integers, empty arrays, key order, escaped
    and non-ASCII names and braces inside strings all come back unchanged."""
    first = {
        "a": 1_700_000_000.123456,
        "b": [],
        "c": 12_345_678_901_234_567_890,
        "n": {"x": [], "y": 'a,b}"{[', "z": {}},
        'q"\\': "\u00e9\u20ac\U0001f600",
    }
    await store.kv.set("k", first, now=NOW)
    merged = await store.kv.merge("k", {"d": "x/y", "a": 0.1 + 0.2, "b": [[]]}, now=NOW)
    expected = {**first, "d": "x/y", "a": 0.1 + 0.2, "b": [[]]}
    assert merged.value == expected
    assert list(merged.value) == list(expected)
    got = await store.kv.get("k", now=NOW)
    assert got is not None
    assert got.value == expected
    assert list(got.value) == list(expected)
    empty = await store.kv.merge("e", {}, now=NOW)
    assert empty.value == {}
    assert (await store.kv.merge("e", {"1": 1}, now=NOW)).value == {"1": 1}


NAMES = ["", "}", "{", "{x}", "a}b{c", "%7D", "with space", "\u00e9:\U0001f600"]


async def test_each_operation_stays_in_one_hash_slot(
    store: RedisStore, raw: redis.asyncio.Redis
) -> None:
    """Keys written together share a hash slot for any name, and awkward names stay distinct."""
    for i, name in enumerate(NAMES):
        lease = await store.leases.acquire(name, owner=f"o{i}", now=NOW, ttl=10)
        assert lease is not None
        assert lease.token == 1  # no two names share a lease
        await store.kv.set(name, i, now=NOW, ttl=10)
        await store.breakers.add_outcomes(name, second=1, calls=1, failures=0, slow=0, window=5)
        await store.breakers.compare_and_set(BreakerRecord(name), BreakerRecord(name, "open", 1))
    keys = await _keys(raw, store.prefix)
    slots: dict[str, set[int]] = {}
    for key in keys:
        kind = key[len(store.prefix) :].split("}")[0]  # the hash tag: kind and name
        slots.setdefault(kind, set()).add(key_slot(key.encode()))
    assert all(len(found) == 1 for found in slots.values()), slots
    kv_tags = [tag for tag in slots if tag == "{kv"]
    lease_tags = [tag for tag in slots if tag.startswith("{lease:")]
    assert len(kv_tags) == 1
    assert len(lease_tags) == len(NAMES)
    found = await store.kv.scan("", now=NOW)
    assert [v.key for v in found] == sorted(NAMES)


async def test_take_matches_token_bucket_exactly(store: RedisStore) -> None:
    """The shared bucket reserves exactly as the in-process TokenBucket does: same waits, same
    refusals, for a schedule of takes and pauses of time."""
    clock = FakeClock()
    bucket = TokenBucket(4, burst=3, max_wait=2.0, clock=clock)
    schedule = [0, 0, 0, 0, 0.1, 0, 0.05, 0.3, 0, 0, 0, 0, 0, 0, 0, 1.7, 0, 0.013, 2.5, 0, 0]
    for i, step in enumerate(schedule):
        clock.advance(step)
        tokens = 2.0 if i % 5 == 4 else 1.0
        try:
            local = TokenGrant(True, bucket.reserve(tokens))
        except RateLimitedError as exc:
            local = TokenGrant(False, exc.retry_after or -1.0)
        shared = await store.rate_limits.take(
            "b", tokens=tokens, rate=4, burst=3, max_wait=2.0, now=clock.monotonic()
        )
        assert shared == local, i


# -- connection failures and configuration -------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.mark.parametrize(
    "template",
    ["redis://:hunter2-secret@127.0.0.1:{port}/0", "redis://127.0.0.1:{port}/0?password=hunter2"],
    ids=["userinfo", "query"],
)
async def test_an_unreachable_server_raises_store_unavailable_quickly(template: str) -> None:
    """Nothing listening: open raises StoreUnavailableError at once -- from the refused
    connection, not after waiting out a timeout (a minute here) or retrying -- naming the
    address but never the password."""
    port = _free_port()
    s = make_store(template.format(port=port), socket_timeout=60)
    with pytest.raises(StoreUnavailableError) as caught:
        await s.open()
    message = str(caught.value)
    assert "timeout" not in message.lower()
    assert f"127.0.0.1:{port}" in message
    assert "hunter2" not in message
    assert "hunter2" not in s.url
    assert "hunter2" not in repr(s)
    assert caught.value.retryable
    with pytest.raises(ConfigurationError):
        await s.kv.get("k", now=NOW)


async def test_a_server_that_never_answers_times_out() -> None:
    """A peer that accepts the connection but never replies: StoreUnavailableError when
    socket_timeout runs out, not a hang."""
    accepted: list[asyncio.StreamWriter] = []

    async def silent(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        s = RedisStore(f"redis://127.0.0.1:{port}/0", socket_timeout=0.3)
        with pytest.raises(StoreUnavailableError, match="Timeout"):
            await s.open()
    finally:
        for writer in accepted:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_a_connection_dropped_by_the_server_is_replaced(
    redis_url: str, raw: redis.asyncio.Redis
) -> None:
    """When the server drops an idle pooled connection, the next operation reconnects and
    succeeds in one round trip of its own."""
    s = RedisStore(redis_url, prefix=_prefix(), flush_prefix_on_close=True, max_connections=1)
    await s.open()
    try:
        await s.kv.set("k", 1, now=NOW)
        connection_id = await s._need_client().client_id()
        assert await raw.client_kill_filter(_id=str(connection_id)) == 1
        await asyncio.sleep(0.05)  # let the server's FIN reach this process
        assert (await s.kv.set("k", 2, now=NOW)).version == 2
        assert await s._need_client().client_id() != connection_id
    finally:
        await s.close()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"prefix": "a{b}:"}, "braces"),
        ({"prefix": "", "flush_prefix_on_close": True}, "non-empty prefix"),
        ({"max_connections": 0}, "max_connections"),
        ({"socket_timeout": -1}, "socket_timeout"),
    ],
)
def test_bad_options_are_refused(options: dict[str, Any], message: str) -> None:
    """Options that would break hash tags, flush a whole database or make no sense are refused."""
    with pytest.raises(ConfigurationError, match=message):
        RedisStore("redis://127.0.0.1:6379/9", **options)


async def test_close_flushes_only_its_own_prefix(redis_url: str, raw: redis.asyncio.Redis) -> None:
    """flush_prefix_on_close deletes every key of the store's prefix and nothing else."""
    mine, other = _prefix(), _prefix()
    a = RedisStore(redis_url, prefix=mine, flush_prefix_on_close=True)
    b = RedisStore(redis_url, prefix=other, flush_prefix_on_close=True)
    await a.open()
    await b.open()
    try:
        for s in (a, b):
            await s.kv.set("k", 1, now=NOW)
            await s.leases.acquire("l", owner="o", now=NOW, ttl=5)
        await a.close()
        assert await _keys(raw, mine) == []
        assert len(await _keys(raw, other)) == 4  # value, index, lease and its fence
    finally:
        await a.close()
        await b.close()
    assert await _keys(raw, other) == []

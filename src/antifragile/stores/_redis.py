"""The Redis backend: every operation is one round trip, every multi-step one a Lua script.

``RedisStore("redis://host:6379/0", prefix="antifragile:")`` (``rediss://`` for TLS) needs the
``redis`` extra. Each read-modify-write runs as one Lua script, registered once, loaded when the
store opens and called by SHA (``EVALSHA``) afterwards; when the server has lost its script
cache (a restart, ``SCRIPT FLUSH``) the call reloads the script and runs it again. Plain reads
(``kv.get``, ``idempotency.get``, ``leases.holder``) are a single ``HMGET``, ``reset_window`` a
single ``DEL``. Nothing is retried by the client: a command whose reply is lost may have run,
so it raises :class:`~antifragile.StoreUnavailableError` rather than being sent twice.

Operations (one script each)
    ``kv.set`` / ``kv.compare_and_set``: read the live version, compare, write value, version
    and expiry, update the indexes. ``kv.merge``: splice the new fields into the stored JSON
    object text (never re-encoding a value, so numbers and empty arrays stay exact).
    ``kv.delete``: compare the version, drop the entry and its index entries. ``kv.scan``: walk
    the lexicographic index from the prefix, skipping expired entries. ``idempotency.claim``:
    acquire if absent or expired, otherwise return the record. ``complete`` / ``release``:
    only for the owner of a live processing claim. ``leases.acquire``: refuse, extend (same
    token) or take with ``INCR`` of the fencing counter. ``renew`` / ``release``: only the
    holder. ``rate_limits.take`` / ``pause``: the token-bucket arithmetic of the other backends
    on ``(tokens, stamp)``. ``breakers.load``: read and renew retention.
    ``breakers.compare_and_set``: compare state, generation and probes left, then write.
    ``breakers.add_outcomes``: ``HINCRBY`` the second's counters, sum ``(second - window,
    second]``, delete older fields.

Time
    All logic compares the ``now`` the caller passes (its :class:`~antifragile.Clock`), never
    the Redis server's clock, so the four backends agree and tests drive expiry with a fake
    clock. Floats are sent as ``repr`` text and stored as text (Lua computes in doubles and
    stores its results with 17 significant digits), so nothing is rounded on the way.

Native expiry (garbage collection only)
    Every key whose content stops mattering gets a relative ``PEXPIRE`` set by the server, a
    little beyond the logical expiry: the logical TTL plus ``expiry_margin`` (default 60 s) for
    KV entries with a TTL, idempotency records and leases; for a token bucket, the time until
    it would be full again plus the margin (a missing bucket *is* a full one); for a breaker's
    window, the window plus the margin. Breaker records have no logical TTL and keep
    ``retention`` (default 30 days), renewed whenever they are loaded or written. Deliberately
    *without* native expiry: KV entries written without a TTL (user data such as feature flags
    must not vanish), the two KV index sets, and the fencing counter of each lease name (a
    fencing token must never go back, or a resource that remembers the highest token it saw
    would refuse every later holder).

Key layout and cluster safety
    Every key of an operation lies in one hash slot, so the scripts also run on Redis Cluster
    (``{...}`` is the hash tag; braces and ``%`` in names are percent-encoded so a name cannot
    end the tag early)::

        <prefix>{idem:<key>}            hash: status owner fp result created exp
        <prefix>{lease:<name>}          hash: owner token exp
        <prefix>{lease:<name>}:fence    counter behind the fencing tokens (INCR)
        <prefix>{rate:<key>}            hash: tokens stamp
        <prefix>{breaker:<name>}        hash: state generation open_until consecutive probes
        <prefix>{breaker:<name>}:w      hash: c:<second> f:<second> s:<second> -> counts
        <prefix>{kv}:v:<key>            hash: v (JSON text) ver exp
        <prefix>{kv}:index              sorted set of live keys, all score 0 (key order)
        <prefix>{kv}:expiry             sorted set of keys that have a TTL, scored by it

    The key-value entries of one store share the ``{kv}`` tag: ``scan`` must return keys in
    order with a limit, which a sorted-set index kept in the same script as each write does in
    ``O(log n + limit)`` (``SCAN`` would visit the whole database, in no order, over many round
    trips). The price is that a store's KV entries live on one cluster node; idempotency
    records, leases, buckets and breakers are spread by their own names. Index entries of keys
    that expired are collected a few at a time by every KV write (through ``{kv}:expiry``) and
    by ``scan`` when it meets them.

The prefix itself may not contain braces. ``flush_prefix_on_close=True`` (for tests) deletes
every key with the prefix when the store closes.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from antifragile.errors import (
    ConfigurationError,
    StoreError,
    StoreUnavailableError,
    redact,
)
from antifragile.policies import SYSTEM_CLOCK, Clock
from antifragile.stores._codec import decode, encode
from antifragile.stores._common import (
    check_breaker_names,
    check_fields,
    check_outcome,
    check_rate,
    check_window,
)
from antifragile.stores._protocols import (
    JSON,
    BreakerRecord,
    Claim,
    IdempotencyRecord,
    IdempotencyStatus,
    Lease,
    TokenGrant,
    Versioned,
    WindowTotals,
)

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.commands.core import AsyncScript

__all__ = ["RedisStore"]

_DAY = 86_400.0
#: the longest native expiry ever set (about 100 years), so no ``PEXPIRE`` overflows
_MAX_EXPIRY_MS = 3_153_600_000_000
#: how many expired KV entries one write collects at most
_GC_BATCH = 16

# -- Lua ----------------------------------------------------------------------------------------
#
# Scripts receive every key they write through KEYS. The KV scripts also read or delete other
# entries of the same ``{kv}`` tag (the index members), which are in the same hash slot.

_KV_PRELUDE = r"""
local vkey, index, expiry = KEYS[1], KEYS[2], KEYS[3]
local key, now, margin = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local vprefix = ARGV[5]

local function live()
  local r = redis.call('HMGET', vkey, 'v', 'ver', 'exp')
  if not r[2] then return nil end
  if r[3] and tonumber(r[3]) <= now then return nil end
  return r
end

local function write(text, ver, exp)
  redis.call('HSET', vkey, 'v', text, 'ver', ver)
  redis.call('ZADD', index, 0, key)
  if exp then
    redis.call('HSET', vkey, 'exp', exp)
    redis.call('ZADD', expiry, exp, key)
    local ms = math.ceil((tonumber(exp) - now) * 1000)
    if ms < 0 then ms = 0 end
    ms = ms + margin
    if ms > MAX_MS then ms = MAX_MS end
    redis.call('PEXPIRE', vkey, ms)
  else
    redis.call('HDEL', vkey, 'exp')
    redis.call('ZREM', expiry, key)
    redis.call('PERSIST', vkey)
  end
end

local dead = redis.call('ZRANGEBYSCORE', expiry, '-inf', ARGV[4], 'LIMIT', 0, GC_BATCH)
for i = 1, #dead do
  redis.call('DEL', vprefix .. dead[i])
  redis.call('ZREM', index, dead[i])
  redis.call('ZREM', expiry, dead[i])
end
""".replace("MAX_MS", str(_MAX_EXPIRY_MS)).replace("GC_BATCH", str(_GC_BATCH))

# ARGV: key now margin_ms gc_cut vprefix | text exp_or_empty
_KV_SET = (
    _KV_PRELUDE
    + r"""
local r = live()
local ver = 1
if r then ver = tonumber(r[2]) + 1 end
local exp = ARGV[7]
if exp == '' then exp = nil end
write(ARGV[6], ver, exp)
return ver
"""
)

# ARGV: key now margin_ms gc_cut vprefix | text exp_or_empty expected_or_empty
_KV_CAS = (
    _KV_PRELUDE
    + r"""
local r = live()
local current = 0
if r then current = tonumber(r[2]) end
if ARGV[8] == '' then
  if r then return false end
elseif current ~= tonumber(ARGV[8]) or not r then
  return false
end
local exp = ARGV[7]
if exp == '' then exp = nil end
write(ARGV[6], current + 1, exp)
return current + 1
"""
)

# ARGV: key now margin_ms gc_cut vprefix | exp_or_empty(keep) field_json value_json ...
#
# The stored text always comes from the same compact JSON encoder, so a top-level field name
# has exactly one spelling: the object is split into (name text, value text) pairs and spliced
# without decoding any value (cjson would round numbers to 14 digits and turn [] into {}).
_KV_MERGE = (
    _KV_PRELUDE
    + r"""
local function skip_string(s, i)
  -- i is just past an opening quote; returns the index just past the closing one
  while true do
    local j = string.find(s, '["\\]', i)
    if string.sub(s, j, j) == '\\' then i = j + 2 else return j + 1 end
  end
end

local function split(s, order, values)
  local n = #s
  if n == 2 then return end
  local i = 2
  while true do
    local after_name = skip_string(s, i + 1)
    local name = string.sub(s, i, after_name - 1)
    local start = after_name + 1
    local k, depth = start, 0
    while true do
      local j = string.find(s, '[\\"{}%[%],]', k)
      local c = string.sub(s, j, j)
      if c == '"' then
        k = skip_string(s, j + 1)
      elseif c == '{' or c == '[' then
        depth = depth + 1
        k = j + 1
      elseif depth == 0 and (c == ',' or c == '}') then
        order[#order + 1] = name
        values[name] = string.sub(s, start, j - 1)
        if c == '}' then return end
        i = j + 1
        break
      else
        if c == '}' or c == ']' then depth = depth - 1 end
        k = j + 1
      end
    end
  end
end

local r = live()
local order, values = {}, {}
local ver = 1
local exp = ARGV[6]
if r then
  if string.sub(r[1], 1, 1) ~= '{' then return false end
  split(r[1], order, values)
  ver = tonumber(r[2]) + 1
  if exp == '' and r[3] then exp = r[3] end
end
for i = 7, #ARGV, 2 do
  local name = ARGV[i]
  if values[name] == nil then order[#order + 1] = name end
  values[name] = ARGV[i + 1]
end
local parts = {}
for i = 1, #order do parts[i] = order[i] .. ':' .. values[order[i]] end
local text = '{' .. table.concat(parts, ',') .. '}'
if exp == '' then write(text, ver, nil) else write(text, ver, exp) end
return {ver, text, exp}
"""
)

# ARGV: key now margin_ms gc_cut vprefix | expected_or_empty
_KV_DELETE = (
    _KV_PRELUDE
    + r"""
local r = live()
local expected = ARGV[6]
if r and expected ~= '' and tonumber(r[2]) ~= tonumber(expected) then return 0 end
redis.call('DEL', vkey)
redis.call('ZREM', index, key)
redis.call('ZREM', expiry, key)
if r then return 1 end
return 0
"""
)

# KEYS: index expiry; ARGV: prefix now limit vprefix
_KV_SCAN = r"""
local index, expiry = KEYS[1], KEYS[2]
local prefix, now, limit, vprefix = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
local lo, hi = '-', '+'
if prefix ~= '' then
  lo = '[' .. prefix
  hi = '(' .. prefix .. '\255'
end
local out, found, offset, gone = {}, 0, 0, {}
local batch = limit
if batch < 32 then batch = 32 end
while found < limit do
  local members = redis.call('ZRANGEBYLEX', index, lo, hi, 'LIMIT', offset, batch)
  if #members == 0 then break end
  offset = offset + #members
  for i = 1, #members do
    local k = members[i]
    local r = redis.call('HMGET', vprefix .. k, 'v', 'ver', 'exp')
    if not r[2] then
      gone[#gone + 1] = k
    elseif not r[3] or tonumber(r[3]) > now then
      out[#out + 1] = k
      out[#out + 1] = r[1]
      out[#out + 1] = r[2]
      out[#out + 1] = r[3] or ''
      found = found + 1
      if found >= limit then break end
    end
  end
end
for i = 1, #gone do
  redis.call('ZREM', index, gone[i])
  redis.call('ZREM', expiry, gone[i])
end
return out
"""

_IDEM_FIELDS = ("status", "owner", "fp", "result", "created", "exp")

# KEYS: record; ARGV: owner now exp has_fp fp pexpire_ms
_IDEM_CLAIM = r"""
local r = redis.call('HMGET', KEYS[1], 'status', 'owner', 'fp', 'result', 'created', 'exp')
if r[1] and tonumber(r[6]) > tonumber(ARGV[2]) then
  return {0, r[1], r[2], r[3], r[4], r[5], r[6]}
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'status', 'processing', 'owner', ARGV[1], 'result', 'null',
           'created', ARGV[2], 'exp', ARGV[3])
if ARGV[4] == '1' then redis.call('HSET', KEYS[1], 'fp', ARGV[5]) end
redis.call('PEXPIRE', KEYS[1], ARGV[6])
return {1}
"""

# KEYS: record; ARGV: owner status result now exp pexpire_ms
_IDEM_COMPLETE = r"""
local r = redis.call('HMGET', KEYS[1], 'status', 'owner', 'exp')
if r[1] ~= 'processing' or r[2] ~= ARGV[1] or tonumber(r[3]) <= tonumber(ARGV[4]) then
  return 0
end
redis.call('HSET', KEYS[1], 'status', ARGV[2], 'result', ARGV[3], 'exp', ARGV[5])
redis.call('PEXPIRE', KEYS[1], ARGV[6])
return 1
"""

# KEYS: record; ARGV: owner
_IDEM_RELEASE = r"""
local r = redis.call('HMGET', KEYS[1], 'status', 'owner')
if r[1] ~= 'processing' or r[2] ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
return 1
"""

# KEYS: lease fence; ARGV: owner now exp pexpire_ms
_LEASE_ACQUIRE = r"""
local r = redis.call('HMGET', KEYS[1], 'owner', 'token', 'exp')
if r[1] and tonumber(r[3]) > tonumber(ARGV[2]) then
  if r[1] ~= ARGV[1] then return false end
  redis.call('HSET', KEYS[1], 'exp', ARGV[3])
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
  return tonumber(r[2])
end
local token = redis.call('INCR', KEYS[2])
redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'token', token, 'exp', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return token
"""

# KEYS: lease; ARGV: owner now exp pexpire_ms
_LEASE_RENEW = r"""
local r = redis.call('HMGET', KEYS[1], 'owner', 'token', 'exp')
if r[1] ~= ARGV[1] or tonumber(r[3]) <= tonumber(ARGV[2]) then return false end
redis.call('HSET', KEYS[1], 'exp', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return tonumber(r[2])
"""

# KEYS: lease; ARGV: owner
_LEASE_RELEASE = r"""
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
return 1
"""

# Shared by the two bucket scripts: the arithmetic of ``stores._common``, operation for
# operation (a missing bucket is full; the level is capped at burst and negative while
# reservations are outstanding).
_BUCKET_PRELUDE = r"""
local function fmt(x) return string.format('%.17g', x) end
local rate, burst, now, margin = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]),
                                 tonumber(ARGV[5])
local r = redis.call('HMGET', KEYS[1], 'tokens', 'stamp')

local function level(at)
  if not r[1] then return burst end
  local l = tonumber(r[1]) + (at - tonumber(r[2])) * rate
  if l > burst then return burst end
  return l
end

local function store(tokens, new_stamp)
  redis.call('HSET', KEYS[1], 'tokens', fmt(tokens), 'stamp', fmt(new_stamp))
  -- the bucket is full again (and as good as absent) after this long
  local ms = math.ceil(((new_stamp - now) + (burst - tokens) / rate) * 1000)
  if ms < 0 then ms = 0 end
  ms = ms + margin
  if ms > MAX_MS then ms = MAX_MS end
  redis.call('PEXPIRE', KEYS[1], ms)
end
""".replace("MAX_MS", str(_MAX_EXPIRY_MS))

# KEYS: bucket; ARGV: tokens rate burst now margin_ms max_wait
_RATE_TAKE = (
    _BUCKET_PRELUDE
    + r"""
local tokens, max_wait = tonumber(ARGV[1]), tonumber(ARGV[6])
local available = level(now)
local wait = 0
if available < tokens then
  wait = (tokens - available) / rate
  if wait > max_wait then return {0, fmt(wait)} end
end
store(available - tokens, now)
return {1, fmt(wait)}
"""
)

# KEYS: bucket; ARGV: seconds rate burst now margin_ms
#
# The bucket is re-anchored at the end of the pause holding what it would hold then, but at
# most one token: a longer pause or outstanding reservations already in place are kept.
_RATE_PAUSE = (
    _BUCKET_PRELUDE
    + r"""
local until_ = now + tonumber(ARGV[1])
local tokens = level(until_)
if tokens > 1 then tokens = 1 end
store(tokens, until_)
return 1
"""
)

# KEYS: bucket; ARGV: tokens rate burst now margin_ms
#
# Tokens of an unused grant go back at max(now, stamp): a pause under way keeps its end. A
# missing bucket is full, and stays absent.
_RATE_REFUND = (
    _BUCKET_PRELUDE
    + r"""
if not r[1] then return 0 end
local at = tonumber(r[2])
if now > at then at = now end
local tokens = level(at) + tonumber(ARGV[1])
if tokens > burst then tokens = burst end
store(tokens, at)
return 1
"""
)

_BREAKER_FIELDS = (
    "state",
    "generation",
    "open_until",
    "consecutive_opens",
    "probes_left",
    "writer",
)

# KEYS: record; ARGV: retention_ms
_BREAKER_LOAD = r"""
local r = redis.call('HMGET', KEYS[1], 'state', 'generation', 'open_until',
                     'consecutive_opens', 'probes_left', 'writer')
if r[1] then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return r
"""

# KEYS: record; ARGV: expected state generation probes_left | new state generation open_until
#                     consecutive_opens probes_left | retention_ms | new writer
_BREAKER_CAS = r"""
local r = redis.call('HMGET', KEYS[1], 'state', 'generation', 'open_until',
                     'consecutive_opens', 'probes_left', 'writer')
local state = r[1] or 'closed'
local generation = tonumber(r[2] or '0')
local probes = tonumber(r[5] or '0')
if state == ARGV[1] and generation == tonumber(ARGV[2]) and probes == tonumber(ARGV[3]) then
  redis.call('HSET', KEYS[1], 'state', ARGV[4], 'generation', ARGV[5], 'open_until', ARGV[6],
             'consecutive_opens', ARGV[7], 'probes_left', ARGV[8], 'writer', ARGV[10])
  redis.call('PEXPIRE', KEYS[1], ARGV[9])
  return {1}
end
return {0, state, r[2] or '0', r[3] or '0', r[4] or '0', r[5] or '0', r[6] or ''}
"""

# KEYS: window; ARGV: second calls failures slow window pexpire_ms
_BREAKER_ADD = r"""
local second = tonumber(ARGV[1])
local names = {'c:', 'f:', 's:'}
for i = 1, 3 do
  if tonumber(ARGV[i + 1]) ~= 0 then
    redis.call('HINCRBY', KEYS[1], names[i] .. ARGV[1], ARGV[i + 1])
  end
end
local all = redis.call('HGETALL', KEYS[1])
local oldest = second - tonumber(ARGV[5])
local totals = {c = 0, f = 0, s = 0}
local old = {}
for i = 1, #all, 2 do
  local field = all[i]
  local at = tonumber(string.sub(field, 3))
  if at <= oldest then
    old[#old + 1] = field
  elseif at <= second then
    local kind = string.sub(field, 1, 1)
    totals[kind] = totals[kind] + tonumber(all[i + 1])
  end
end
for i = 1, #old, 500 do
  redis.call('HDEL', KEYS[1], unpack(old, i, math.min(i + 499, #old)))
end
redis.call('PEXPIRE', KEYS[1], ARGV[6])
return {totals.c, totals.f, totals.s}
"""

_SCRIPTS: dict[str, str] = {
    "kv_set": _KV_SET,
    "kv_cas": _KV_CAS,
    "kv_merge": _KV_MERGE,
    "kv_delete": _KV_DELETE,
    "kv_scan": _KV_SCAN,
    "idem_claim": _IDEM_CLAIM,
    "idem_complete": _IDEM_COMPLETE,
    "idem_release": _IDEM_RELEASE,
    "lease_acquire": _LEASE_ACQUIRE,
    "lease_renew": _LEASE_RENEW,
    "lease_release": _LEASE_RELEASE,
    "rate_take": _RATE_TAKE,
    "rate_pause": _RATE_PAUSE,
    "rate_refund": _RATE_REFUND,
    "breaker_load": _BREAKER_LOAD,
    "breaker_cas": _BREAKER_CAS,
    "breaker_add": _BREAKER_ADD,
}


# -- helpers -------------------------------------------------------------------------------------


def _num(value: float) -> str:
    """A float as text that Lua and Redis parse back to the same double."""
    return repr(float(value))


def _name(value: str) -> str:
    """*value* made safe inside a hash tag (injective: ``%``, ``{`` and ``}`` are encoded)."""
    return value.replace("%", "%25").replace("{", "%7B").replace("}", "%7D")


def _unname(value: str) -> str:
    """The inverse of :func:`_name`."""
    return value.replace("%7D", "}").replace("%7B", "{").replace("%25", "%")


def _safe_url(url: str) -> tuple[str, list[str]]:
    """*url* with its password masked, and the secrets found in it."""
    parts = urlsplit(url)
    secrets: list[str] = []
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        user, colon, password = userinfo.partition(":")
        if colon:
            secrets.append(password)
            userinfo = f"{user}:***"
        netloc = f"{userinfo}@{hostport}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        masked = []
        for name, value in pairs:
            if name.lower() in ("password", "pass", "passwd"):
                secrets.append(value)
                value = "***"
            masked.append((name, value))
        query = urlencode(masked, safe="*")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment)), secrets


def _positive(name: str, value: float | None) -> float | None:
    if value is not None and not (isinstance(value, int | float) and value > 0):
        raise ConfigurationError(f"{name} must be a positive number of seconds, got {value!r}")
    return None if value is None else float(value)


class RedisStore:
    """A :class:`~antifragile.stores.Store` on Redis (see the module docs for the design).

    Options: ``prefix`` (every key starts with it; default ``"antifragile:"``),
    ``flush_prefix_on_close`` (delete every key with the prefix on close; for tests),
    ``socket_timeout`` (seconds for connecting and for each reply; default 5),
    ``max_connections`` (pool size; callers beyond it wait up to ``socket_timeout``),
    ``expiry_margin`` (seconds a key outlives its logical expiry; default 60) and
    ``retention`` (native expiry of breaker records, which have no TTL; default 30 days).
    """

    def __init__(
        self,
        url: str,
        *,
        clock: Clock = SYSTEM_CLOCK,
        prefix: str = "antifragile:",
        flush_prefix_on_close: bool = False,
        socket_timeout: float | None = 5.0,
        max_connections: int = 50,
        expiry_margin: float = 60.0,
        retention: float = 30 * _DAY,
    ) -> None:
        scheme = urlsplit(url).scheme.lower()
        if scheme not in ("redis", "rediss"):
            raise ConfigurationError(
                f"RedisStore needs a redis:// or rediss:// URL, got {scheme!r}"
            )
        if not isinstance(prefix, str) or "{" in prefix or "}" in prefix:
            raise ConfigurationError(
                f"Redis key prefix must be a string without braces, got {prefix!r}"
            )
        if flush_prefix_on_close and not prefix:
            raise ConfigurationError("flush_prefix_on_close needs a non-empty prefix")
        if not (isinstance(max_connections, int) and max_connections >= 1):
            raise ConfigurationError(f"max_connections must be >= 1, got {max_connections!r}")
        if not (isinstance(expiry_margin, int | float) and expiry_margin >= 0):
            raise ConfigurationError(f"expiry_margin must be >= 0 seconds, got {expiry_margin!r}")
        self.url, self._secrets = _safe_url(url)
        self._raw_url = url
        self.clock = clock
        self.prefix = prefix
        self.flush_prefix_on_close = flush_prefix_on_close
        self.socket_timeout = _positive("socket_timeout", socket_timeout)
        self.max_connections = max_connections
        self.expiry_margin = float(expiry_margin)
        self.retention = _positive("retention", retention) or 30 * _DAY
        self._margin_ms = math.ceil(self.expiry_margin * 1000)
        self._retention_ms = min(_MAX_EXPIRY_MS, math.ceil(self.retention * 1000))
        self._client: Redis | None = None
        self._scripts: dict[str, AsyncScript] = {}
        self.kv = RedisKeyValueStore(self)
        self.idempotency = RedisIdempotencyStore(self)
        self.leases = RedisLeaseStore(self)
        self.rate_limits = RedisRateLimitStore(self)
        self.breakers = RedisBreakerStore(self)

    def __repr__(self) -> str:
        return f"RedisStore({self.url!r}, prefix={self.prefix!r})"

    # -- lifecycle ----------------------------------------------------------------------------

    async def open(self) -> None:
        """Connect, check the server answers and load every script (one round trip)."""
        if self._client is not None:
            return
        try:
            from redis.asyncio import BlockingConnectionPool, Redis
            from redis.asyncio.retry import Retry
            from redis.backoff import NoBackoff
        except ImportError:  # pragma: no cover - depends on the installation
            raise ConfigurationError(
                "the Redis store needs the redis package: pip install 'antifragile[redis]'"
            ) from None
        try:
            pool = BlockingConnectionPool.from_url(
                self._raw_url,
                max_connections=self.max_connections,
                timeout=self.socket_timeout,
                socket_timeout=self.socket_timeout,
                socket_connect_timeout=self.socket_timeout,
                decode_responses=True,
                # RESP2: the replies the scripts are written for, and (unlike RESP3 with
                # maintenance notifications on) the pool then replaces a pooled connection
                # the server closed while it was idle instead of failing the next call on it
                protocol=2,
                # a script whose reply was lost may have run: never send it twice
                retry=Retry(NoBackoff(), 0),
            )
        except ValueError as exc:
            raise ConfigurationError(self._clean(f"invalid Redis URL {self.url}: {exc}")) from None
        client = Redis.from_pool(pool)
        scripts = {name: client.register_script(text) for name, text in _SCRIPTS.items()}
        try:
            async with client.pipeline(transaction=False) as pipe:
                pipe.ping()
                for script in scripts.values():
                    pipe.script_load(script.script)
                replies = await pipe.execute()
        except BaseException as exc:
            await client.aclose()
            raise self._translate(exc) from None
        for script, sha in zip(scripts.values(), replies[1:], strict=True):
            script.sha = sha
        self._client = client
        self._scripts = scripts

    async def close(self) -> None:
        """Disconnect (after deleting every key with the prefix, when asked to)."""
        client, self._client = self._client, None
        if client is None:
            return
        try:
            if self.flush_prefix_on_close:
                pattern = _glob_escape(self.prefix) + "*"
                batch: list[str] = []
                async for key in client.scan_iter(match=pattern, count=500):
                    batch.append(key)
                    if len(batch) >= 500:
                        await client.unlink(*batch)
                        batch.clear()
                if batch:
                    await client.unlink(*batch)
        except Exception as exc:
            raise self._translate(exc) from None
        finally:
            await client.aclose()

    async def ping(self) -> float:
        """Round-trip time in seconds (measured on the real clock)."""
        client = self._need_client()
        started = time.perf_counter()
        try:
            await client.ping()
        except Exception as exc:
            raise self._translate(exc) from None
        return time.perf_counter() - started

    # -- plumbing shared by the parts -----------------------------------------------------------

    def _need_client(self) -> Redis:
        if self._client is None:
            raise ConfigurationError("the Redis store is not open: await store.open() first")
        return self._client

    def _key(self, kind: str, name: str) -> str:
        return f"{self.prefix}{{{kind}:{_name(name)}}}"

    def _ttl_ms(self, ttl: float) -> int:
        """The native expiry of something that lives *ttl* seconds (plus the margin)."""
        if not math.isfinite(ttl):
            return _MAX_EXPIRY_MS
        return max(1, min(_MAX_EXPIRY_MS, math.ceil(max(0.0, ttl) * 1000) + self._margin_ms))

    async def _run(self, script: str, keys: list[str], args: list[str | int]) -> Any:
        self._need_client()
        try:
            return await self._scripts[script](keys=keys, args=args)
        except Exception as exc:
            raise self._translate(exc) from None

    async def _hmget(self, key: str, *fields: str) -> list[Any]:
        client = self._need_client()
        try:
            return list(await client.hmget(key, list(fields)))
        except Exception as exc:
            raise self._translate(exc) from None

    async def _delete(self, key: str) -> None:
        client = self._need_client()
        try:
            await client.delete(key)
        except Exception as exc:
            raise self._translate(exc) from None

    def _clean(self, message: str) -> str:
        return redact(message, secrets=self._secrets)

    def _translate(self, exc: BaseException) -> BaseException:
        from redis import exceptions as rexc

        if isinstance(exc, rexc.ConnectionError | rexc.TimeoutError | OSError | TimeoutError):
            reason = str(exc) or type(exc).__name__
            return StoreUnavailableError(
                self._clean(f"the Redis store at {self.url} is unavailable: {reason}")
            )
        if isinstance(exc, rexc.RedisError):
            return StoreError(
                self._clean(f"the Redis store at {self.url} failed: {type(exc).__name__}: {exc}")
            )
        return exc


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


# -- the parts -----------------------------------------------------------------------------------


class _Part:
    __slots__ = ("_store",)

    def __init__(self, store: RedisStore) -> None:
        self._store = store


def _versioned(key: str, text: str, version: Any, exp: str | None) -> Versioned:
    return Versioned(key, decode(text), int(version), float(exp) if exp else None)


class RedisKeyValueStore(_Part):
    """KV entries: ``{kv}:v:<key>`` hashes, a lexicographic index and an expiry index."""

    __slots__ = ()

    def _keys(self, key: str) -> list[str]:
        base = f"{self._store.prefix}{{kv}}:"
        return [f"{base}v:{key}", f"{base}index", f"{base}expiry"]

    def _common(self, key: str, now: float) -> list[str | int]:
        store = self._store
        return [key, _num(now), store._margin_ms, _num(now - store.expiry_margin), self._vprefix]

    @property
    def _vprefix(self) -> str:
        return f"{self._store.prefix}{{kv}}:v:"

    async def get(self, key: str, *, now: float) -> Versioned | None:
        value, version, exp = await self._store._hmget(self._keys(key)[0], "v", "ver", "exp")
        if version is None or (exp is not None and float(exp) <= now):
            return None
        return _versioned(key, value, version, exp)

    async def set(
        self, key: str, value: JSON, *, now: float, ttl: float | None = None
    ) -> Versioned:
        text = encode(value)
        exp = "" if ttl is None else _num(now + ttl)
        version = await self._store._run(
            "kv_set", self._keys(key), [*self._common(key, now), text, exp]
        )
        return _versioned(key, text, version, exp)

    async def compare_and_set(
        self,
        key: str,
        value: JSON,
        *,
        expected_version: int | None,
        now: float,
        ttl: float | None = None,
    ) -> Versioned | None:
        text = encode(value)
        exp = "" if ttl is None else _num(now + ttl)
        expected = "" if expected_version is None else str(int(expected_version))
        version = await self._store._run(
            "kv_cas", self._keys(key), [*self._common(key, now), text, exp, expected]
        )
        return None if version is None else _versioned(key, text, version, exp)

    async def merge(
        self, key: str, fields: dict[str, JSON], *, now: float, ttl: float | None = None
    ) -> Versioned:
        check_fields(fields)
        # names become strings exactly as JSON writes them; refused before anything is sent
        normalized: dict[str, JSON] = decode(encode(fields))
        pairs: list[str | int] = []
        for name, value in normalized.items():
            pairs += [encode(name), encode(value)]
        exp = "" if ttl is None else _num(now + ttl)
        reply = await self._store._run(
            "kv_merge", self._keys(key), [*self._common(key, now), exp, *pairs]
        )
        if reply is None:
            raise ConfigurationError(
                f"cannot merge fields into key {key!r}: it does not hold a JSON object"
            )
        version, text, stored_exp = reply
        return _versioned(key, text, version, stored_exp)

    async def delete(self, key: str, *, expected_version: int | None = None, now: float) -> bool:
        expected = "" if expected_version is None else str(int(expected_version))
        deleted = await self._store._run(
            "kv_delete", self._keys(key), [*self._common(key, now), expected]
        )
        return bool(deleted)

    async def scan(self, prefix: str, *, now: float, limit: int = 100) -> list[Versioned]:
        if limit <= 0:
            return []
        keys = self._keys("")
        flat = await self._store._run(
            "kv_scan", keys[1:], [prefix, _num(now), int(limit), self._vprefix]
        )
        return [
            _versioned(flat[i], flat[i + 1], flat[i + 2], flat[i + 3])
            for i in range(0, len(flat), 4)
        ]


class RedisIdempotencyStore(_Part):
    """Idempotency records: one hash per key, expiring natively a margin after its TTL."""

    __slots__ = ()

    @staticmethod
    def _record(key: str, fields: list[Any]) -> IdempotencyRecord:
        status, owner, fingerprint, result, created, exp = fields
        return IdempotencyRecord(
            key=key,
            status=IdempotencyStatus(status),
            owner=owner,
            fingerprint=fingerprint,
            result=decode(result),
            created_at=float(created),
            expires_at=float(exp),
        )

    async def claim(
        self,
        key: str,
        *,
        owner: str,
        now: float,
        ttl: float,
        fingerprint: str | None = None,
    ) -> Claim:
        store = self._store
        exp = now + ttl
        reply = await store._run(
            "idem_claim",
            [store._key("idem", key)],
            [
                owner,
                _num(now),
                _num(exp),
                "0" if fingerprint is None else "1",
                fingerprint or "",
                store._ttl_ms(ttl),
            ],
        )
        if reply[0] == 1:
            record = IdempotencyRecord(
                key=key,
                status=IdempotencyStatus.PROCESSING,
                owner=owner,
                fingerprint=fingerprint,
                result=None,
                created_at=now,
                expires_at=exp,
            )
            return Claim(acquired=True, record=record, fingerprint=fingerprint)
        return Claim(acquired=False, record=self._record(key, reply[1:]), fingerprint=fingerprint)

    async def complete(
        self,
        key: str,
        *,
        owner: str,
        status: IdempotencyStatus,
        result: JSON = None,
        now: float,
        ttl: float,
    ) -> bool:
        store = self._store
        outcome = check_outcome(status)
        text = encode(result)
        done = await store._run(
            "idem_complete",
            [store._key("idem", key)],
            [
                owner,
                outcome.value,
                text,
                _num(now),
                _num(now + ttl),
                store._ttl_ms(ttl),
            ],
        )
        return bool(done)

    async def get(self, key: str, *, now: float) -> IdempotencyRecord | None:
        store = self._store
        fields = await store._hmget(store._key("idem", key), *_IDEM_FIELDS)
        if fields[0] is None or float(fields[5]) <= now:
            return None
        return self._record(key, fields)

    async def release(self, key: str, *, owner: str) -> bool:
        store = self._store
        return bool(await store._run("idem_release", [store._key("idem", key)], [owner]))

    async def scan(self, prefix: str, *, now: float, limit: int = 100) -> list[IdempotencyRecord]:
        """A SCAN over the records' keys (a full pass over the keyspace: for erasure, not a
        hot path)."""
        if limit <= 0:
            return []
        store = self._store
        client = store._need_client()
        head = f"{store.prefix}{{idem:"
        pattern = _glob_escape(head + _name(prefix)) + "*"
        names: list[str] = []
        try:
            async for raw in client.scan_iter(match=pattern, count=1000):
                text = raw.decode() if isinstance(raw, bytes) else str(raw)
                if text.endswith("}") and text.startswith(head):
                    names.append(_unname(text[len(head) : -1]))
        except Exception as exc:
            raise store._translate(exc) from None
        found: list[IdempotencyRecord] = []
        for name in sorted(set(names)):
            record = await self.get(name, now=now)
            if record is not None:
                found.append(record)
                if len(found) >= limit:
                    break
        return found

    async def delete(self, key: str) -> bool:
        store = self._store
        client = store._need_client()
        try:
            return bool(await client.delete(store._key("idem", key)))
        except Exception as exc:
            raise store._translate(exc) from None


class RedisLeaseStore(_Part):
    """Leases: one hash per name plus a fencing counter that is never reset."""

    __slots__ = ()

    async def acquire(self, name: str, *, owner: str, now: float, ttl: float) -> Lease | None:
        store = self._store
        key = store._key("lease", name)
        exp = _num(now + ttl)
        token = await store._run(
            "lease_acquire", [key, key + ":fence"], [owner, _num(now), exp, store._ttl_ms(ttl)]
        )
        return None if token is None else Lease(name, owner, int(token), float(exp))

    async def renew(self, name: str, *, owner: str, now: float, ttl: float) -> Lease | None:
        store = self._store
        exp = _num(now + ttl)
        token = await store._run(
            "lease_renew",
            [store._key("lease", name)],
            [owner, _num(now), exp, store._ttl_ms(ttl)],
        )
        return None if token is None else Lease(name, owner, int(token), float(exp))

    async def release(self, name: str, *, owner: str) -> bool:
        store = self._store
        return bool(await store._run("lease_release", [store._key("lease", name)], [owner]))

    async def holder(self, name: str, *, now: float) -> Lease | None:
        store = self._store
        owner, token, exp = await store._hmget(store._key("lease", name), "owner", "token", "exp")
        if owner is None or float(exp) <= now:
            return None
        return Lease(name, owner, int(token), float(exp))


class RedisRateLimitStore(_Part):
    """Token buckets: ``tokens`` and ``stamp`` in one hash; the arithmetic of the other backends."""

    __slots__ = ()

    async def take(
        self,
        key: str,
        *,
        tokens: float,
        rate: float,
        burst: float,
        max_wait: float,
        now: float,
    ) -> TokenGrant:
        check_rate(rate)
        store = self._store
        granted, wait = await store._run(
            "rate_take",
            [store._key("rate", key)],
            [
                _num(tokens),
                _num(rate),
                _num(burst),
                _num(now),
                store._margin_ms,
                _num(max_wait),
            ],
        )
        return TokenGrant(granted=bool(granted), wait=float(wait))

    async def refund(
        self, key: str, *, tokens: float, rate: float, burst: float, now: float
    ) -> None:
        check_rate(rate)
        if not tokens > 0:
            return
        store = self._store
        await store._run(
            "rate_refund",
            [store._key("rate", key)],
            [_num(tokens), _num(rate), _num(burst), _num(now), store._margin_ms],
        )

    async def pause(
        self, key: str, *, seconds: float, rate: float, burst: float, now: float
    ) -> None:
        check_rate(rate)
        if not seconds > 0:
            return
        store = self._store
        await store._run(
            "rate_pause",
            [store._key("rate", key)],
            [_num(seconds), _num(rate), _num(burst), _num(now), store._margin_ms],
        )


class RedisBreakerStore(_Part):
    """Breaker records (hash, kept ``retention``) and per-second window buckets (hash)."""

    __slots__ = ()

    @staticmethod
    def _record(name: str, fields: list[Any]) -> BreakerRecord:
        state, generation, open_until, consecutive, probes, writer = fields
        return BreakerRecord(
            name=name,
            state=state or "closed",
            generation=int(generation or 0),
            open_until=float(open_until or 0.0),
            consecutive_opens=int(consecutive or 0),
            probes_left=int(probes or 0),
            writer=writer or "",
        )

    async def load(self, name: str) -> BreakerRecord:
        store = self._store
        fields = await store._run(
            "breaker_load", [store._key("breaker", name)], [store._retention_ms]
        )
        return self._record(name, fields)

    async def compare_and_set(self, expected: BreakerRecord, new: BreakerRecord) -> BreakerRecord:
        check_breaker_names(expected, new)
        store = self._store
        reply = await store._run(
            "breaker_cas",
            [store._key("breaker", expected.name)],
            [
                str(expected.state),
                str(int(expected.generation)),
                str(int(expected.probes_left)),
                str(new.state),
                str(int(new.generation)),
                _num(new.open_until),
                str(int(new.consecutive_opens)),
                str(int(new.probes_left)),
                store._retention_ms,
                new.writer,
            ],
        )
        if reply[0] == 1:
            return new
        return self._record(expected.name, reply[1:])

    async def add_outcomes(
        self,
        name: str,
        *,
        second: int,
        calls: int,
        failures: int,
        slow: int,
        window: int,
    ) -> WindowTotals:
        check_window(window)
        store = self._store
        calls_total, failures_total, slow_total = await store._run(
            "breaker_add",
            [store._key("breaker", name) + ":w"],
            [
                str(int(second)),
                str(int(calls)),
                str(int(failures)),
                str(int(slow)),
                str(int(window)),
                store._ttl_ms(window),
            ],
        )
        return WindowTotals(int(calls_total), int(failures_total), int(slow_total))

    async def reset_window(self, name: str) -> None:
        store = self._store
        await store._delete(store._key("breaker", name) + ":w")

    async def add_probe_result(
        self, name: str, *, generation: int, failure: bool, slow: bool
    ) -> WindowTotals:
        # the window's script on a hash of its own, one bucket per round, kept as long as
        # the record
        store = self._store
        calls, failures, slow_calls = await store._run(
            "breaker_add",
            [store._key("breaker", name) + ":p"],
            [
                str(int(generation)),
                "1",
                str(int(bool(failure))),
                str(int(bool(slow))),
                "1",
                store._retention_ms,
            ],
        )
        return WindowTotals(int(calls), int(failures), int(slow_calls))

"""Per-provider policy overrides, from a TOML file: change a connector's defaults without code.

::

    # antifragile.toml
    [providers.shopify]
    timeout = 5.0                 # seconds per attempt
    attempts = 8
    backoff_base = 1.0            # exponential back-off: first ceiling, seconds
    backoff_cap = 20.0
    rate_per_second = 4.0         # Shopify Plus leaks faster
    rate_burst = 80

    [providers.slack]
    breaker_failure_rate = 0.8
    breaker_open_duration = 60.0
    bulkhead = 2

::

    overrides = load_overrides("antifragile.toml")          # {"shopify": PolicyOverrides(...)}
    policy = policy_for("shopify", overrides, clock=clock)  # shopify_policy() with them applied
    shopify = ShopifyConnector(policy=policy)
    connectors = Connectors(policies=policies_for(overrides, clock=clock))

Each ``[providers.<name>]`` table names a provider the connectors know (``whatsapp``,
``twilio``, ``shopify``, ``hubspot``, ``slack``, ``resend``, ``sendgrid``, ``smtp``,
``calcom``, ``calendly``, ``acuity``) and holds any of these keys (all optional; a key left
out keeps the provider's default):

========================  ==========================================================  =========
key                       meaning                                                     valid
========================  ==========================================================  =========
``timeout``               seconds per attempt                                         > 0
``total_timeout``         seconds for the whole call, retries and waits included      > 0
``attempts``              attempts in all, the first included                         int >= 1
``backoff_base``          the exponential back-off's first ceiling, seconds           > 0
``backoff_cap``           its largest ceiling, seconds                                > 0
``rate_per_second``       the client-side token bucket's rate                         > 0
``rate_burst``            its burst                                                   >= 1
``breaker``               ``false`` turns the circuit breaker off                     bool
``breaker_failure_rate``  the failure rate that opens the breaker                     (0, 1]
``breaker_window``        the calls the breaker's window counts                       int >= 1
``breaker_open_duration`` seconds the breaker stays open before a probe               > 0
``bulkhead``              the most calls in flight at once                            int >= 1
========================  ==========================================================  =========

An unknown provider, an unknown key or a bad value is a :class:`~antifragile.ConfigurationError`
that names the table and the key (``providers.shopify.attempts``). Overrides apply on top of the
provider's default policy (:func:`policy_for`) or any policy (:func:`apply_overrides`), which
keeps what is not overridden -- the retry predicate, ``Retry-After`` handling, jitter, the retry
budget, the breaker's other settings. For WhatsApp and Twilio the overridden policy is the outer
one (retries, breaker, pacing); their per-attempt HTTP timeout stays the connector's *timeout*
argument unless ``timeout`` is overridden too, which then bounds each attempt from outside.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from antifragile.connectors._acuity import acuity_policy
from antifragile.connectors._calcom import calcom_policy
from antifragile.connectors._calendly import calendly_policy
from antifragile.connectors._hubspot import hubspot_policy
from antifragile.connectors._mailchimp import mailchimp_policy
from antifragile.connectors._mandrill import mandrill_policy
from antifragile.connectors._resend import resend_policy
from antifragile.connectors._sendgrid import sendgrid_policy
from antifragile.connectors._shopify import shopify_policy
from antifragile.connectors._slack import slack_policy
from antifragile.connectors._smtp import smtp_policy
from antifragile.connectors._twilio import twilio_policy
from antifragile.connectors._whatsapp import whatsapp_policy
from antifragile.errors import ConfigurationError
from antifragile.policies import (
    SYSTEM_CLOCK,
    Bulkhead,
    CircuitBreaker,
    Clock,
    Exponential,
    Policy,
    Retry,
    TokenBucket,
)


def _smtp(*, clock: Clock, timeout: float) -> Policy:
    # SMTP's per-step timeout is the connector's (aiosmtplib); its policy has none of its own
    del timeout
    return smtp_policy(clock=clock)


#: the default policy factory of each provider a connector exists for
DEFAULT_POLICIES: Mapping[str, Callable[..., Policy]] = {
    "whatsapp": whatsapp_policy,
    "twilio": twilio_policy,
    "shopify": shopify_policy,
    "hubspot": hubspot_policy,
    "slack": slack_policy,
    "resend": resend_policy,
    "sendgrid": sendgrid_policy,
    "smtp": _smtp,
    "calcom": calcom_policy,
    "mandrill": mandrill_policy,
    "mailchimp": mailchimp_policy,
    "calendly": calendly_policy,
    "acuity": acuity_policy,
}


@dataclasses.dataclass(frozen=True, slots=True)
class PolicyOverrides:
    """The overrides of one provider's policy (``None``: keep the default); see the module
    docs for the meaning and the valid range of each field."""

    timeout: float | None = None
    total_timeout: float | None = None
    attempts: int | None = None
    backoff_base: float | None = None
    backoff_cap: float | None = None
    rate_per_second: float | None = None
    rate_burst: float | None = None
    breaker: bool | None = None
    breaker_failure_rate: float | None = None
    breaker_window: int | None = None
    breaker_open_duration: float | None = None
    bulkhead: int | None = None

    def __post_init__(self) -> None:
        for name in (
            "timeout",
            "total_timeout",
            "backoff_base",
            "backoff_cap",
            "rate_per_second",
            "breaker_open_duration",
        ):
            _positive(name, getattr(self, name))
        for name in ("attempts", "breaker_window", "bulkhead"):
            value = getattr(self, name)
            if value is not None and (
                not isinstance(value, int) or isinstance(value, bool) or value < 1
            ):
                raise ConfigurationError(f"{name} must be an integer >= 1, got {value!r}")
        if self.rate_burst is not None and not (_number(self.rate_burst) and self.rate_burst >= 1):
            raise ConfigurationError(f"rate_burst must be a number >= 1, got {self.rate_burst!r}")
        rate = self.breaker_failure_rate
        if rate is not None and not (_number(rate) and 0 < rate <= 1):
            raise ConfigurationError(f"breaker_failure_rate must be within (0, 1], got {rate!r}")
        if self.breaker is not None and not isinstance(self.breaker, bool):
            raise ConfigurationError(f"breaker must be true or false, got {self.breaker!r}")
        base, cap = self.backoff_base, self.backoff_cap
        if base is not None and cap is not None and cap < base:
            raise ConfigurationError(f"backoff_cap ({cap}) must be >= backoff_base ({base})")
        breaker_keys = ("breaker_failure_rate", "breaker_window", "breaker_open_duration")
        if self.breaker is False and any(getattr(self, k) is not None for k in breaker_keys):
            raise ConfigurationError("breaker = false leaves no breaker to configure")

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, where: str = "") -> PolicyOverrides:
        """Read one ``[providers.<name>]`` table; errors name *where* (``providers.shopify``)."""
        prefix = f"{where}." if where else ""
        if not isinstance(data, Mapping):
            raise ConfigurationError(f"{where or 'the overrides'} must be a table")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigurationError(
                f"unknown policy override(s) {', '.join(prefix + k for k in unknown)}; "
                f"known: {', '.join(sorted(known))}"
            )
        values: dict[str, Any] = dict(data)
        for name in (
            "rate_burst",
            "timeout",
            "total_timeout",
            "backoff_base",
            "backoff_cap",
            "rate_per_second",
            "breaker_failure_rate",
            "breaker_open_duration",
        ):
            value = values.get(name)
            if isinstance(value, int) and not isinstance(value, bool):
                values[name] = float(value)
        try:
            return cls(**values)
        except ConfigurationError as exc:
            raise ConfigurationError(f"{prefix}{exc}") from None

    def to_dict(self) -> dict[str, Any]:
        """The fields that are set, as a TOML table would hold them."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _positive(name: str, value: Any) -> None:
    if value is not None and not (_number(value) and value > 0):
        raise ConfigurationError(f"{name} must be a number > 0 (seconds or a rate), got {value!r}")


def parse_overrides(data: Mapping[str, Any]) -> dict[str, PolicyOverrides]:
    """The overrides by provider from a parsed document: ``{"providers": {name: table}}``, or
    the ``providers`` table itself (``{name: table}``)."""
    if not isinstance(data, Mapping):
        raise ConfigurationError("policy overrides must be a table of [providers.<name>] tables")
    tables = data.get("providers", data)
    if not isinstance(tables, Mapping):
        raise ConfigurationError("providers must be a table of [providers.<name>] tables")
    unknown = sorted(set(tables) - set(DEFAULT_POLICIES))
    if unknown:
        raise ConfigurationError(
            f"policy overrides for unknown provider(s) {', '.join(unknown)}; "
            f"known: {', '.join(DEFAULT_POLICIES)}"
        )
    return {
        name: PolicyOverrides.from_mapping(table, where=f"providers.{name}")
        for name, table in tables.items()
    }


def load_overrides(path: str | Path) -> dict[str, PolicyOverrides]:
    """The ``[providers.<name>]`` tables of a TOML file (other tables are ignored)."""
    file = Path(path)
    try:
        document = tomllib.loads(file.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigurationError(f"cannot read the policy overrides file {file}: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"{file}: not valid TOML: {exc}") from exc
    return parse_overrides({"providers": document.get("providers", {})})


def apply_overrides(policy: Policy, overrides: PolicyOverrides) -> Policy:
    """A new :class:`~antifragile.Policy`: *policy* with *overrides* applied.

    Strategies the overrides do not touch are *policy*'s own objects (a breaker, a budget, a
    rate limiter keep their state and are shared with *policy*); the ones they change are new.
    """
    o = overrides
    observer = policy.observer
    retry = policy.retry
    if o.attempts is not None or o.backoff_base is not None or o.backoff_cap is not None:
        base_retry = retry if retry is not None else Retry(backoff=Exponential())
        backoff = base_retry.backoff
        if o.backoff_base is not None or o.backoff_cap is not None:
            exponential = backoff if isinstance(backoff, Exponential) else Exponential()
            base = o.backoff_base if o.backoff_base is not None else exponential.initial
            cap = o.backoff_cap if o.backoff_cap is not None else max(exponential.cap, base)
            if cap < base:
                raise ConfigurationError(
                    f"backoff_cap ({cap}) must be >= backoff_base ({base}) for {policy.name}"
                )
            backoff = dataclasses.replace(exponential, initial=base, cap=cap)
        retry = dataclasses.replace(
            base_retry,
            attempts=o.attempts if o.attempts is not None else base_retry.attempts,
            backoff=backoff,
        )
    rate = policy.rate
    if o.rate_per_second is not None or o.rate_burst is not None:
        per_second = o.rate_per_second or (rate.rate if rate is not None else None)
        if per_second is None:
            raise ConfigurationError(
                f"rate_burst needs rate_per_second: {policy.name} has no rate limit to adjust"
            )
        burst = o.rate_burst if o.rate_burst is not None else (rate.burst if rate else None)
        rate = TokenBucket(
            per_second,
            burst=burst,
            max_wait=rate.max_wait if rate is not None else 10.0,
            name=policy.name,
            clock=policy.clock,
            observer=observer,
        )
    breaker = policy.breaker
    if o.breaker is False:
        breaker = None
    elif (
        o.breaker is True
        or o.breaker_failure_rate is not None
        or o.breaker_window is not None
        or o.breaker_open_duration is not None
    ):
        config = dataclasses.asdict(breaker.config) if breaker is not None else {}
        if o.breaker_failure_rate is not None:
            config["failure_rate"] = o.breaker_failure_rate
        if o.breaker_window is not None:
            config["window"] = o.breaker_window
        if o.breaker_open_duration is not None:
            config["open_duration"] = o.breaker_open_duration
        if breaker is None or config != dataclasses.asdict(breaker.config):
            breaker = CircuitBreaker(policy.name, clock=policy.clock, observer=observer, **config)
    bulkhead = policy.bulkhead
    if o.bulkhead is not None:
        bulkhead = Bulkhead(
            o.bulkhead,
            max_wait=bulkhead.max_wait if bulkhead is not None else 0.0,
            name=policy.name,
            observer=observer,
        )
    return policy.replace(
        timeout=o.timeout if o.timeout is not None else policy.timeout,
        total_timeout=o.total_timeout if o.total_timeout is not None else policy.total_timeout,
        retry=retry,
        breaker=breaker,
        rate=rate,
        bulkhead=bulkhead,
    )


def policy_for(
    provider: str,
    overrides: Mapping[str, PolicyOverrides] | PolicyOverrides | None = None,
    *,
    clock: Clock = SYSTEM_CLOCK,
    timeout: float = 10.0,
) -> Policy:
    """*provider*'s default policy (``shopify_policy(clock=clock, timeout=timeout)``...) with
    its overrides applied: *overrides* is the mapping :func:`load_overrides` returns (the
    provider's entry is used, if any) or one provider's :class:`PolicyOverrides`."""
    factory = DEFAULT_POLICIES.get(provider)
    if factory is None:
        raise ConfigurationError(
            f"no connector for provider {provider!r}; known: {', '.join(DEFAULT_POLICIES)}"
        )
    policy = factory(clock=clock, timeout=timeout)
    if isinstance(overrides, PolicyOverrides):
        return apply_overrides(policy, overrides)
    chosen = (overrides or {}).get(provider)
    return policy if chosen is None else apply_overrides(policy, chosen)


def policies_for(
    overrides: Mapping[str, PolicyOverrides],
    *,
    clock: Clock = SYSTEM_CLOCK,
    timeout: float = 10.0,
) -> dict[str, Policy]:
    """A policy per provider that has overrides (for ``Connectors(policies=...)``)."""
    return {
        provider: policy_for(provider, overrides, clock=clock, timeout=timeout)
        for provider in overrides
    }

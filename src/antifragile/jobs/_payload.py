"""Job payloads: validated against the job function's signature and encoded as JSON at enqueue.

A job function ``async def send(ctx, session_id: str, retries: int = 3)`` takes its payload as
parameters after the :class:`~antifragile.jobs.JobContext`. :class:`PayloadCodec` builds a
pydantic model from those parameters, so that a wrong or unserialisable payload is refused
where it is enqueued -- with a :class:`~antifragile.ConfigurationError` naming the field --
and not hours later in a worker.

Secrets never persist in a payload: a field whose name looks like a credential (``token``,
``api_key``, ``password``, ``secret``, ``authorization``, ...) is refused, at any depth. Pass a
reference instead (a credential name, a customer id) and look the secret up when the job runs.

Nor do people: a payload carries references, not personal data. Whatever is encoded goes
through :func:`~antifragile.observability.pseudonymise` -- a field named for a person
(``customer_email``, ``phone_number``, ``full_name``...) and every email address and E.164
phone number in any string, at any depth, become a reference (``pii_`` and a keyed hash), the
same for the same person. Pass a record's id and read the person from the record when the job
runs.
"""

from __future__ import annotations

import functools
import inspect
import itertools
import json
import math
import re
import typing
from collections.abc import Callable, Mapping
from typing import Any

import pydantic
import pydantic_core

from antifragile.errors import REDACTED, ConfigurationError, redact
from antifragile.observability import pseudonymise

_WORD = re.compile(r"[A-Z]?[a-z0-9]+|[A-Z]+(?![a-z])")
_SECRET_WORDS = frozenset(
    {
        "token",
        "password",
        "passwd",
        "passphrase",
        "secret",
        "authorization",
        "apikey",
        "credential",
        "credentials",
    }
)
_SECRET_PAIRS = frozenset({("api", "key"), ("private", "key"), ("access", "key")})


#: parameter types whose exactly-typed arguments are stored as they are
_SCALARS: frozenset[type] = frozenset({str, int, bool, float})


@functools.lru_cache(maxsize=4096)
def looks_secret(name: str) -> bool:
    """Whether a field called *name* probably holds a credential.

    Names are split into words (``snake_case``, ``kebab-case`` and ``camelCase``); a name is
    secret-looking when one word is ``token``, ``password``, ``secret``, ``authorization``,
    ``apikey`` or ``credentials`` (and a few spellings of them), or two adjacent words are
    ``api key``, ``private key`` or ``access key``. ``idempotency_key`` and ``max_tokens`` are
    not.
    """
    words = [w.lower() for w in _WORD.findall(name)]
    if any(w in _SECRET_WORDS for w in words):
        return True
    return any(pair in _SECRET_PAIRS for pair in itertools.pairwise(words))


def check_no_secrets(value: Any, *, job: str, path: str = "") -> None:
    """Raise :class:`ConfigurationError` naming the first secret-looking key in *value*."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            where = f"{path}.{key}" if path else str(key)
            if isinstance(key, str) and looks_secret(key):
                raise ConfigurationError(
                    f"job {job!r}: payload field {where!r} looks like a secret; secrets never "
                    "persist in job payloads -- pass a reference (a credential's name) and read "
                    "the secret when the job runs"
                )
            check_no_secrets(item, job=job, path=where)
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            check_no_secrets(item, job=job, path=f"{path}[{index}]")


def redact_payload(value: Any) -> Any:
    """A copy of a JSON payload fit to show: secret-looking keys and credentials in strings
    replaced by ``[REDACTED]``."""
    if isinstance(value, Mapping):
        return {
            key: REDACTED if isinstance(key, str) and looks_secret(key) else redact_payload(item)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return [redact_payload(item) for item in value]
    if isinstance(value, str):
        return redact(value)
    return value


def _describe(error: pydantic.ValidationError) -> str:
    """Which fields are wrong and why, without echoing the values (they may be secret)."""
    parts = []
    for item in error.errors(include_url=False, include_input=False):
        where = ".".join(str(p) for p in item["loc"]) or "(payload)"
        parts.append(f"{where}: {item['msg']}")
    return "; ".join(parts)


class PayloadCodec:
    """Validates, encodes and decodes the payload of one job function.

    ``encode(args, kwargs)`` binds the call's arguments to the function's parameters (after the
    context), validates them and returns a JSON object; ``decode(payload)`` validates a stored
    payload again and returns the positional and keyword arguments to call the function with.
    """

    def __init__(self, fn: Callable[..., Any], job: str) -> None:
        self.job = job
        signature = inspect.signature(fn)
        params = list(signature.parameters.values())
        if not params or params[0].kind not in (
            inspect.Parameter.POSITIONAL_ONLY,
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
        ):
            raise ConfigurationError(
                f"job {job!r}: the function must take the JobContext as its first parameter"
            )
        self.params = params[1:]
        for param in self.params:
            if param.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
                raise ConfigurationError(
                    f"job {job!r}: *args and **kwargs cannot be validated; name every payload "
                    "field as a parameter"
                )
            if param.name.startswith("_"):
                raise ConfigurationError(
                    f"job {job!r}: payload field {param.name!r} must not start with '_'"
                )
            if looks_secret(param.name):
                raise ConfigurationError(
                    f"job {job!r}: payload field {param.name!r} looks like a secret; secrets "
                    "never persist in job payloads -- pass a reference (a credential's name) "
                    "and read the secret when the job runs"
                )
        self.signature = signature.replace(parameters=self.params)
        self._positional = [
            p.name for p in self.params if p.kind is inspect.Parameter.POSITIONAL_ONLY
        ]
        self._max_positional = sum(
            p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
            for p in self.params
        )
        self._fn = fn
        self._model: type[pydantic.BaseModel] | None = None
        #: parameter names and types when every parameter is a required str/int/bool/float
        #: or unannotated (``Any``): arguments of exactly those types (any of the four for
        #: ``Any``) are their own payload (no validation needed)
        self._scalars: tuple[tuple[str, Any], ...] | None = None
        if self.params:
            try:
                self._build()
            except NameError:
                pass  # a forward reference not defined yet: built at first use

    def _build(self) -> type[pydantic.BaseModel]:
        if self._model is not None:
            return self._model
        try:
            hints = typing.get_type_hints(self._fn, include_extras=True)
        except NameError:
            raise
        except Exception as exc:  # pragma: no cover - exotic annotations
            raise ConfigurationError(
                f"job {self.job!r}: cannot read its annotations: {exc}"
            ) from None
        fields: dict[str, Any] = {}
        scalars: list[tuple[str, Any]] = []
        for param in self.params:
            annotation = hints.get(param.name, Any)
            default = ... if param.default is inspect.Parameter.empty else param.default
            fields[param.name] = (annotation, default)
            if (
                (annotation in _SCALARS or annotation is Any)
                and default is ...
                and param.kind is not inspect.Parameter.VAR_POSITIONAL
                and param.kind is not inspect.Parameter.VAR_KEYWORD
            ):
                scalars.append((param.name, annotation))
        try:
            model: type[pydantic.BaseModel] = pydantic.create_model(
                f"{self.job}_payload",
                __config__=pydantic.ConfigDict(
                    extra="forbid", protected_namespaces=(), ser_json_inf_nan="constants"
                ),
                **fields,
            )
        except pydantic.PydanticSchemaGenerationError as exc:
            raise ConfigurationError(
                f"job {self.job!r}: a payload field has a type that cannot be validated or "
                f"stored as JSON: {exc.message}"
            ) from None
        self._model = model
        if len(scalars) == len(self.params):
            self._scalars = tuple(scalars)
        return model

    def _model_or_error(self) -> type[pydantic.BaseModel]:
        try:
            return self._build()
        except NameError as exc:
            raise ConfigurationError(
                f"job {self.job!r}: an annotation names something undefined: {exc}"
            ) from None

    def encode(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> dict[str, Any]:
        """Validate a call's arguments and return its payload (a JSON object)."""
        if self._scalars is not None:
            quick = self._scalar_payload(args, kwargs)
            if quick is not None:
                personal: dict[str, Any] = pseudonymise(quick)
                return personal
        try:
            bound = self.signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise ConfigurationError(f"job {self.job!r}: {exc}") from None
        if not self.params:
            return {}
        model = self._model_or_error()
        try:
            instance = model.model_validate(dict(bound.arguments))
            payload: dict[str, Any] = instance.model_dump(mode="json")
        except pydantic.ValidationError as exc:
            raise ConfigurationError(
                f"job {self.job!r}: invalid payload: {_describe(exc)}"
            ) from None
        except pydantic_core.PydanticSerializationError as exc:
            raise ConfigurationError(
                f"job {self.job!r}: the payload cannot be stored as JSON: {exc}"
            ) from None
        try:
            json.dumps(payload, allow_nan=False)
        except ValueError as exc:
            raise ConfigurationError(
                f"job {self.job!r}: the payload cannot be stored as JSON: {exc}"
            ) from None
        check_no_secrets(payload, job=self.job)
        pseudonymised: dict[str, Any] = pseudonymise(payload)
        return pseudonymised

    def _scalar_payload(
        self, args: tuple[Any, ...], kwargs: Mapping[str, Any]
    ) -> dict[str, Any] | None:
        """The payload of a call whose arguments all have exactly their parameter's scalar
        type (what validation would return unchanged); ``None`` for any other call, which
        takes the validating path."""
        scalars = self._scalars
        assert scalars is not None
        if len(args) + len(kwargs) != len(scalars) or len(args) > self._max_positional:
            return None
        payload: dict[str, Any] = {}
        for (name, kind), value in zip(scalars, args, strict=False):
            if type(value) is not kind and (kind is not Any or type(value) not in _SCALARS):
                return None
            payload[name] = value
        for name, kind in scalars[len(args) :]:
            if name in self._positional or name not in kwargs:
                return None
            value = kwargs[name]
            if type(value) is not kind and (kind is not Any or type(value) not in _SCALARS):
                return None
            payload[name] = value
        for value in payload.values():
            if type(value) is float and not math.isfinite(value):
                return None  # the validating path refuses it with its message
        return payload

    def decode(self, payload: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """Validate a stored payload; the arguments to call the function with."""
        if not self.params:
            if payload not in (None, {}):
                raise ConfigurationError(f"job {self.job!r}: takes no payload, got {payload!r}")
            return (), {}
        if self._scalars is not None and type(payload) is dict:
            quick = self._scalar_arguments(payload)
            if quick is not None:
                return quick
        model = self._model_or_error()
        try:
            instance = model.model_validate(payload)
        except pydantic.ValidationError as exc:
            raise ConfigurationError(
                f"job {self.job!r}: the stored payload does not fit the function: {_describe(exc)}"
            ) from None
        values = {name: getattr(instance, name) for name in model.model_fields}
        positional = tuple(values.pop(name) for name in self._positional)
        return positional, values

    def _scalar_arguments(
        self, payload: dict[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any]] | None:
        """The arguments of a stored payload that holds exactly the parameters, each of
        exactly its scalar type (validation would return every value unchanged); ``None`` for
        any other payload, which takes the validating path."""
        scalars = self._scalars
        assert scalars is not None
        if len(payload) != len(scalars):
            return None
        values: dict[str, Any] = {}
        for name, kind in scalars:
            value = payload.get(name, payload)  # the payload itself stands for "missing"
            if type(value) is not kind and (kind is not Any or type(value) not in _SCALARS):
                return None
            values[name] = value
        if not self._positional:
            return (), values
        positional = tuple(values.pop(name) for name in self._positional)
        return positional, values

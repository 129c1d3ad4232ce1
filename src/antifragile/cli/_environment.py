"""The environment of a long-running command: a ``.env`` file and ``*_FILE`` secrets.

:func:`read_env_file` parses a ``.env`` file: ``NAME=value`` lines, ``export NAME=value``
accepted, ``#`` comments and blank lines skipped, a value in single quotes taken literally, one
in double quotes with ``\\n``, ``\\"`` and ``\\\\`` escapes, an unquoted one up to a `` #``
comment, trimmed. No ``${VAR}`` expansion.

:func:`apply_environment` puts it into ``os.environ`` -- a variable already set wins over the
file -- and then, for every ``ANTIFRAGILE_<NAME>_FILE``, sets ``ANTIFRAGILE_<NAME>`` to that file's
content (trailing newline and surrounding spaces stripped): the way container orchestrators
hand secrets over (``/run/secrets/x``). Setting both ``ANTIFRAGILE_<NAME>`` and
``ANTIFRAGILE_<NAME>_FILE`` is an error, as is a file that cannot be read. It returns a function
that puts ``os.environ`` back as it was.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, MutableMapping
from pathlib import Path

from antifragile.errors import ConfigurationError

__all__ = ["DEFAULT_ENV_FILE", "apply_environment", "read_env_file"]

#: the ``.env`` file read when ``--env-file`` is not given (when it exists)
DEFAULT_ENV_FILE = Path(".env")

_PREFIX = "ANTIFRAGILE_"
_FILE_SUFFIX = "_FILE"
_LINE = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*?)\s*$")
_ESCAPES = {"n": "\n", '"': '"', "\\": "\\", "t": "\t"}


def _unquote(raw: str, where: str) -> str:
    if raw[:1] == "'":
        if len(raw) < 2 or not raw.endswith("'"):
            raise ConfigurationError(f"{where}: unterminated single quote")
        return raw[1:-1]
    if raw[:1] == '"':
        if len(raw) < 2 or not raw.endswith('"'):
            raise ConfigurationError(f"{where}: unterminated double quote")
        return re.sub(r"\\(.)", lambda m: _ESCAPES.get(m.group(1), m.group(0)), raw[1:-1])
    return raw.split(" #", 1)[0].strip()


def read_env_file(path: Path) -> dict[str, str]:
    """The variables of the ``.env`` file at *path* (see the module docs); a line that is not
    ``NAME=value`` is a :class:`~antifragile.ConfigurationError` naming the file and line."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigurationError(f"--env-file: no file at {str(path)!r}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"--env-file: cannot read {str(path)!r}: {exc}") from None
    values: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        where = f"{path}, line {number}"
        match = _LINE.match(line)
        if match is None:
            raise ConfigurationError(f"{where}: expected NAME=value")
        values[match.group(1)] = _unquote(match.group(2), where)
    return values


def _file_secrets(environ: MutableMapping[str, str]) -> dict[str, str]:
    """``ANTIFRAGILE_<NAME>`` for each ``ANTIFRAGILE_<NAME>_FILE`` of *environ*, from its file."""
    found: dict[str, str] = {}
    for name, location in list(environ.items()):
        if not (name.startswith(_PREFIX) and name.endswith(_FILE_SUFFIX)):
            continue
        target = name.removesuffix(_FILE_SUFFIX)
        if target in environ:
            raise ConfigurationError(f"both {target} and {name} are set; keep one")
        try:
            found[target] = Path(location).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise ConfigurationError(
                f"{name}: cannot read the secret file {location!r}: {reason}"
            ) from None
    return found


def apply_environment(
    env_file: Path | None, environ: MutableMapping[str, str] | None = None
) -> Callable[[], None]:
    """Load *env_file* (default: ``./.env`` when it exists) and the ``*_FILE`` secrets into
    *environ* (default ``os.environ``), as the module docs say; the function returned puts
    *environ* back as it was. Nothing is changed when it raises."""
    env = os.environ if environ is None else environ
    path = env_file if env_file is not None else DEFAULT_ENV_FILE
    values = read_env_file(path) if env_file is not None or path.is_file() else {}
    set_here: dict[str, str | None] = {}  # each variable set here, and its value before

    def put(name: str, value: str) -> None:
        set_here.setdefault(name, env.get(name))
        env[name] = value

    def restore() -> None:
        for name, value in set_here.items():
            if value is None:
                env.pop(name, None)
            else:
                env[name] = value

    try:
        for name, value in values.items():
            if name not in env:
                put(name, value)
        for name, value in _file_secrets(env).items():
            put(name, value)
    except BaseException:
        restore()
        raise
    return restore

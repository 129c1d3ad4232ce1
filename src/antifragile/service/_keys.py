"""Which scope each admin route needs, checked on every request after the credential.

* ``read`` -- every ``GET`` of ``/v1/admin`` (and ``/v1/admin/whoami``);
* ``operate`` -- every other method: redrive, resolve, purge, breakers, flags, tasks, session
  resets, ``POST /v1/ai-results``;
* ``admin`` -- everything under ``/v1/admin/api-keys`` (creating, listing, revoking keys) and
  ``POST /v1/admin/erasure`` (erasing a customer's records).

A scope includes the ones before it (:data:`~antifragile.service._auth.SCOPES`). A credential
without the scope a route needs is answered ``403 FORBIDDEN``, naming the scope. Bootstrap keys
(``ANTIFRAGILE_ADMIN_API_KEYS``) and JWTs hold every scope; stored keys hold the ones they were
created with.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from antifragile.errors import ErrorCode
from antifragile.service._auth import Principal, require_admin
from antifragile.service._envelope import ApiError

_READING = frozenset({"GET", "HEAD", "OPTIONS"})


def scope_for(method: str, path: str) -> str:
    """The scope a request of *method* to the route *path* (its template) needs."""
    if "/api-keys" in path or path.endswith("/erasure"):
        return "admin"
    return "read" if method.upper() in _READING else "operate"


async def require_scope(
    request: Request, principal: Annotated[Principal, Depends(require_admin)]
) -> Principal:
    """FastAPI dependency of the admin routes: the caller's principal when it holds the scope
    its route needs (:func:`scope_for`), else ``403 FORBIDDEN``."""
    route = request.scope.get("route")
    path = getattr(route, "path", None) or request.url.path
    needed = scope_for(request.method, path)
    if not principal.can(needed):
        raise ApiError(
            403, ErrorCode.FORBIDDEN, f"this credential does not hold the {needed!r} scope"
        )
    return principal

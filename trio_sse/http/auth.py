"""Who is calling: the :class:`Principal` every route checks its rights against.

With auth off (the dev default) every caller is the anonymous principal, which may
read every project and publish. Token verification (JWT) plugs in here: routes only
ever ask a principal, never parse credentials themselves.
"""

from __future__ import annotations

import attrs

from ..settings import Settings
from .errors import ApiError

__all__ = ["ANONYMOUS", "Principal", "authenticate", "require_admin", "require_publish"]


@attrs.frozen(slots=True)
class Principal:
    sub: str | None
    projects: frozenset[str] | None  # None = every project
    publish: bool
    admin: bool


#: The caller when auth is off: every project, may publish, not an admin (admin
#: actions that the contract keeps for admins, such as /sse/test-event in prod, stay closed).
ANONYMOUS = Principal(sub=None, projects=None, publish=True, admin=False)


def authenticate(settings: Settings) -> Principal:
    """The caller's principal. Raises a 401 :class:`ApiError` when auth is required and absent."""
    if settings.auth_enabled:
        raise ApiError(401, "auth_unavailable", "token authentication is configured but not supported by this build")
    return ANONYMOUS


def require_publish(principal: Principal) -> None:
    if not principal.publish:
        raise ApiError(403, "forbidden", "this token may not publish")


def require_admin(principal: Principal, settings: Settings) -> None:
    """Admin-only actions: open when auth is off, unless the profile keeps them for admins."""
    if settings.auth_enabled and not principal.admin:
        raise ApiError(403, "forbidden", "admin rights required")

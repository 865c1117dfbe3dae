"""Who is calling: token verification and the :class:`Principal` routes check rights against.

Tokens are JWTs (PyJWT) read from ``Authorization: Bearer``, the ``sse_token`` cookie
(what a browser's EventSource sends), or the ``access_token`` query parameter. With an
HS256 secret only HS256 is accepted; with a public key only the algorithm of that
key's type (RS256 for RSA, ES256 for EC), so ``alg: none`` and algorithm confusion
are refused. Required claims: ``sub`` and ``exp``; ``aud``/``iss`` when configured.
Rights come from the ``sse`` claim: ``{"projects": [...] | ["*"], "publish": bool,
"admin": bool}``. With auth off (the dev default) every caller is :data:`ANONYMOUS`.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Iterable, Sequence
from typing import Any

import attrs
import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from ..settings import Settings, SettingsError
from .cookies import cookie_value
from .errors import ApiError

__all__ = ["ANONYMOUS", "Authenticator", "Principal", "authenticator_for", "require_admin", "require_publish"]

COOKIE_NAME = "sse_token"
MAX_TOKEN_LENGTH = 8192
#: The shortest ``jwt_secret`` the prod profile runs with: RFC 7518 section 3.2 asks for
#: an HS256 key at least as long as the hash output (256 bits). A short secret can be
#: found offline from one token by trying candidates, and then anyone can mint tokens.
MIN_SECRET_BYTES = 32

log = logging.getLogger("trio_sse.auth")


@attrs.frozen(slots=True)
class Principal:
    sub: str | None
    projects: frozenset[str] | None  # None = every project
    publish: bool
    admin: bool
    expires_at: float | None = None  # wall-clock seconds (the token's exp)

    def may_see(self, project_id: str | None) -> bool:
        return self.projects is None or (project_id is not None and project_id in self.projects)


#: The caller when auth is off: every project, may publish, not an admin (actions the
#: contract keeps for admins, such as /sse/test-event in prod, stay closed).
ANONYMOUS = Principal(sub=None, projects=None, publish=True, admin=False)


def _invalid(message: str) -> ApiError:
    return ApiError(401, "invalid_token", message)


def _token_from(
    headers: Sequence[tuple[bytes, bytes]], query_token: str | None, credential_origins: frozenset[str]
) -> str | None:
    authorization = origin = host = fetch_site = None
    cookies: list[str] = []  # HTTP/2 may split one Cookie header into several fields
    for name, value in headers:
        name = name.lower()
        if name == b"authorization" and authorization is None:
            authorization = value.decode("latin-1")
        elif name == b"cookie":
            cookies.append(value.decode("latin-1"))
        elif name == b"origin" and origin is None:
            origin = value.decode("latin-1")
        elif name == b"host" and host is None:
            host = value.decode("latin-1")
        elif name == b"sec-fetch-site" and fetch_site is None:
            fetch_site = value.decode("latin-1")
    if authorization is not None:
        scheme, _, credentials = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not credentials.strip():
            raise _invalid("the Authorization header must be 'Bearer <token>'")
        return credentials.strip()
    # Linear whatever the interpreter: SimpleCookie was quadratic in backslashes (see .cookies).
    cookie = cookie_value(cookies, COOKIE_NAME) if cookies else None
    if cookie is not None:
        if _cookie_allowed(origin, host, fetch_site, credential_origins):
            return cookie
        if query_token:
            return query_token  # not ambient: the page had to know it
        raise _invalid("the sse_token cookie is not accepted from this origin (not listed in cors_origins)")
    return query_token


def _cookie_allowed(
    origin: str | None, host: str | None, fetch_site: str | None, credential_origins: frozenset[str]
) -> bool:
    """Whether the ``sse_token`` cookie may stand for the caller on this request.

    A browser attaches cookies to requests other sites make (a "simple" cross-site POST
    needs no preflight), so a cookie alone does not show that the caller meant the
    request (CSRF). It is taken when the request is not a browser's cross-origin one (no
    ``Origin``), comes from this server's own origin (``Origin`` matches ``Host``, or the
    browser's ``Sec-Fetch-Site: same-origin``), or from an origin listed in
    ``cors_origins`` — the origins credentials are allowed for (``*`` lists none).
    """
    if origin is None or origin in credential_origins or fetch_site == "same-origin":
        return True
    _, separator, netloc = origin.partition("://")
    return bool(separator) and host is not None and netloc.lower() == host.strip().lower()


def _rights(claims: dict[str, Any]) -> Principal:
    sse = claims.get("sse", {})
    if not isinstance(sse, dict):
        raise _invalid("the 'sse' claim must be an object")
    projects = sse.get("projects", [])
    if not isinstance(projects, list) or not all(isinstance(p, str) for p in projects):
        raise _invalid("sse.projects must be a list of strings")
    publish, admin = sse.get("publish", False), sse.get("admin", False)
    if not isinstance(publish, bool) or not isinstance(admin, bool):
        raise _invalid("sse.publish and sse.admin must be booleans")
    sub = claims["sub"]
    if not isinstance(sub, str) or not sub:
        # An empty subject would be everyone's: streams are owned, and per-client limits
        # counted, by sub, so every such token would share them (and, with the audit log
        # naming the address for a missing sub, hide who acted).
        raise _invalid("sub must be a non-empty string")
    allowed = None if "*" in projects else frozenset(projects)
    try:
        expires_at = float(claims["exp"])  # PyJWT has checked it is an integer in the future
    except OverflowError:
        expires_at = math.inf  # a JSON integer beyond any float: never
    return Principal(sub, allowed, publish, admin, expires_at)


class Authenticator:
    """Verifies tokens for one set of settings (the key is loaded once)."""

    def __init__(self, settings: Settings) -> None:
        self.enabled = settings.auth_enabled
        self._audience = settings.jwt_audience
        self._issuer = settings.jwt_issuer
        #: Origins a cookie is accepted from besides the server's own: credentials are
        #: allowed for listed origins only, never through ``*``.
        self._credential_origins = frozenset(origin for origin in settings.cors_origins if origin != "*")
        self._key: Any = None
        self._algorithms: list[str] = []
        if settings.jwt_secret:
            self._key, self._algorithms = settings.jwt_secret, ["HS256"]
            if settings.profile != "prod" and len(settings.jwt_secret.encode()) < MIN_SECRET_BYTES:
                # prod refuses to start (trio_sse.app.check_servable); dev runs, once warned.
                log.warning(
                    "jwt_secret is %d bytes: the prod profile refuses secrets under %d bytes (RFC 7518 3.2)",
                    len(settings.jwt_secret.encode()),
                    MIN_SECRET_BYTES,
                )
        elif settings.jwt_public_key:
            self._key = _load_public_key(settings.jwt_public_key)
            self._algorithms = ["RS256"] if isinstance(self._key, rsa.RSAPublicKey) else ["ES256"]

    def authenticate(self, headers: Sequence[tuple[bytes, bytes]], query_token: str | None = None) -> Principal:
        """The caller's principal; a 401 :class:`ApiError` for a missing or bad token."""
        if not self.enabled:
            return ANONYMOUS
        token = _token_from(headers, query_token, self._credential_origins)
        if not token:
            raise _invalid("a bearer token is required")
        if len(token) > MAX_TOKEN_LENGTH:
            raise _invalid("the token is too long")
        try:
            claims = jwt.decode(
                token,
                self._key,
                algorithms=self._algorithms,
                audience=self._audience,
                issuer=self._issuer,
                options={"require": ["exp", "sub"], "verify_aud": self._audience is not None},
            )
        except jwt.PyJWTError as exc:
            raise _invalid(_why(exc)) from None
        return _rights(claims)


#: Why a token was refused, in our own words: PyJWT's messages may quote parts of the
#: token, and these reasons end up in the audit log. Subclasses come before their bases.
_REASONS: tuple[tuple[type[jwt.PyJWTError], str], ...] = (
    (jwt.ExpiredSignatureError, "the token has expired"),
    (jwt.ImmatureSignatureError, "the token is not valid yet"),
    (jwt.InvalidAudienceError, "the token is for another audience"),
    (jwt.InvalidIssuerError, "the token is from another issuer"),
    (jwt.InvalidAlgorithmError, "the token's algorithm is not allowed"),
    (jwt.InvalidSignatureError, "the token's signature does not verify"),
    (jwt.DecodeError, "the token is malformed"),
)


def _why(exc: jwt.PyJWTError) -> str:
    if isinstance(exc, jwt.MissingRequiredClaimError) and exc.claim in ("exp", "sub", "aud", "iss"):
        return f"the token has no {exc.claim!r} claim"
    for kind, reason in _REASONS:
        if isinstance(exc, kind):
            return reason
    return "the token is not valid"


def _load_public_key(path: str) -> Any:
    try:
        with open(path, "rb") as fh:
            key = load_pem_public_key(fh.read())
    except OSError as exc:
        raise SettingsError(f"jwt_public_key: cannot read {path}: {exc.strerror}") from exc
    except ValueError as exc:
        raise SettingsError(f"jwt_public_key: {path} is not a PEM public key") from exc
    if isinstance(key, ec.EllipticCurvePublicKey) and not isinstance(key.curve, ec.SECP256R1):
        raise SettingsError("jwt_public_key: ES256 needs a P-256 key")
    if not isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
        raise SettingsError("jwt_public_key: only RSA (RS256) and P-256 EC (ES256) keys are supported")
    return key


@functools.lru_cache(maxsize=16)
def authenticator_for(settings: Settings) -> Authenticator:
    return Authenticator(settings)


def require_publish(principal: Principal, projects: Iterable[str | None] = ()) -> None:
    """Publishing needs the ``publish`` right, and a project-limited token may only
    publish into its projects (a broadcast would reach every project)."""
    if not principal.publish:
        raise ApiError(403, "forbidden", "this token may not publish")
    for project in projects:
        if not principal.may_see(project):
            raise ApiError(403, "forbidden", f"this token may not publish to project {project!r}")


def require_admin(principal: Principal, settings: Settings) -> None:
    """Admin-only actions (when auth is on)."""
    if settings.auth_enabled and not principal.admin:
        raise ApiError(403, "forbidden", "admin rights required")


def require_project(principal: Principal, project_id: str | None) -> None:
    """A project-limited token may only open or move a stream within its projects."""
    if principal.projects is None:
        return
    if project_id is None:
        raise ApiError(403, "forbidden", "this token is limited to some projects: pass project=<one of them>")
    if project_id not in principal.projects:
        raise ApiError(403, "forbidden", f"this token may not read project {project_id!r}")

"""The quart-trio blueprint: publish, subscribe, stats, connections, health, metrics,
and the browser assets (dashboard page, ``client.js``; see :mod:`trio_sse.http.dashboard`).

Routes are thin: read and validate input, call the hub, shape JSON. Every error is
raised as (or mapped to) an :class:`ApiError` and rendered by one handler.
``GET /sse/events`` and ``GET /sse/stats/stream`` are not Quart routes: registering the
blueprint mounts the lean ASGI stream handlers (:mod:`trio_sse.http.stream`,
:mod:`trio_sse.http.stats_stream`) in front of the app.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any, cast

import orjson
from quart import Blueprint, Quart, Response, g, request
from quart.blueprints import BlueprintSetupState
from werkzeug.exceptions import HTTPException

from ..core.errors import ValidationError
from ..core.validation import MAX_EVENT_ID_LENGTH, check_project_id, has_forbidden_characters
from ..runtime.admission import Refused
from ..runtime.backends import BackendUnavailable
from ..runtime.hub import UNSET, Hub, TooManyPendingChanges, UnknownConnection
from ..runtime.subscriptions import check_subscribe_rewind, parse_mode
from ..settings import Settings
from .audit import audit_admin
from .auth import Principal, require_admin, require_project, require_publish
from .bodies import json_object, parse_json, read_body
from .caller import caller_of
from .cors import CorsPolicy
from .dashboard import register_browser_routes
from .errors import ApiError, error_headers, log_refusal, send_refusal, to_api_error
from .hypercorn_trio import final_send_shielded
from .introspection import connection_entry, health_answer
from .metrics import make_registry, render_metrics
from .params import header, request_head_size
from .publish import serve_publish
from .stats_stream import serve_stats_stream
from .stream import serve_stream

__all__ = ["json_response", "make_blueprint", "mount_lean_handlers"]

MAX_CONNECTIONS_PAGE = 1000
#: The ``max_head_bytes`` default, for requests that arrive before the hub is running.
DEFAULT_MAX_HEAD_BYTES = Settings().max_head_bytes


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status=status, headers=headers, content_type="application/json")


def error_response(error: ApiError) -> Response:
    """``error`` as the current Quart request's answer (one audit line, as the lean handlers' ``send_refusal``)."""
    principal: Principal | None = g.get("trio_sse_principal")
    log_refusal(error, request.method, request.path, request.remote_addr, principal.sub if principal else None)
    headers = {name.decode(): value.decode() for name, value in error_headers(error)}
    return Response(error.body(), status=error.status, headers=headers, content_type="application/json")


def http_exception_response(exc: HTTPException) -> Response:
    """Quart/werkzeug errors (404, 405, 413 ...) as JSON like every other error."""
    code = (exc.name or "error").lower().replace(" ", "_")
    allow = getattr(exc, "valid_methods", None)
    headers = {"Allow": ", ".join(sorted(allow))} if allow else None
    return error_response(ApiError(exc.code or 500, code, exc.description or exc.name or "error", headers=headers))


async def read_json(max_bytes: int, *, required: bool = True) -> Any:
    """The current Quart request's body as JSON (the lean handlers' reader: :func:`read_body`)."""
    return parse_json(await read_body(request.body, max_bytes, request.content_length), required=required)


def caller(hub: Hub) -> Principal:
    """The principal of the current Quart request (:func:`caller_of`, as the lean handlers)."""
    principal = caller_of(hub.settings, request.scope)
    g.trio_sse_principal = principal  # for the audit line if the request is refused later
    return principal


def audit_admin_action(action: str, principal: Principal, status: int, **detail: Any) -> None:
    """One audit line for an admin action of the current Quart request, once it succeeded."""
    audit_admin(
        action,
        method=request.method,
        path=request.path,
        sub=principal.sub,
        client=request.remote_addr,
        status=status,
        **detail,
    )


def _int_param(name: str, default: int, minimum: int, maximum: int | None = None) -> int:
    raw = request.args.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, "invalid_request", f"{name} must be an integer") from None
    if value < minimum:
        raise ApiError(400, "invalid_request", f"{name} must be >= {minimum}")
    return value if maximum is None else min(value, maximum)


def make_blueprint(get_hub: Callable[[], Hub], *, name: str = "trio_sse") -> Blueprint:
    """The API as a blueprint; ``get_hub`` is called per request (the hub may start later)."""
    bp = Blueprint(name, __name__)
    metrics_registry = make_registry(get_hub)

    @bp.record_once
    def mount_stream(state: BlueprintSetupState) -> None:
        prefix = (state.url_prefix or "").rstrip("/")
        mount_lean_handlers(cast(Quart, state.app), get_hub, prefix)

    @bp.errorhandler(ApiError)
    async def on_api_error(error: ApiError) -> Response:
        return error_response(error)

    @bp.errorhandler(ValidationError)
    @bp.errorhandler(UnknownConnection)
    @bp.errorhandler(TooManyPendingChanges)
    @bp.errorhandler(Refused)
    @bp.errorhandler(BackendUnavailable)
    async def on_known_error(error: Exception) -> Response:
        api_error = to_api_error(error)
        assert api_error is not None
        return error_response(api_error)

    @bp.errorhandler(HTTPException)
    async def on_http_exception(error: HTTPException) -> Response:
        return http_exception_response(error)

    @bp.post("/sse/test-event")
    async def test_event() -> Response:
        hub = get_hub()
        principal = caller(hub)
        open_to_publishers = hub.settings.test_event != "admin"
        if open_to_publishers:
            # Open means "no admin needed", not "no rights": it publishes like /sse/publish,
            # so with auth on it needs the publish right and stays in the token's projects.
            require_publish(principal)
        elif not (hub.settings.auth_enabled and principal.admin):
            raise ApiError(403, "forbidden", "/sse/test-event is admin-only in this profile")
        body = await read_json(hub.settings.max_body_bytes, required=False)
        body = {} if body is None else json_object(body, "body")
        event_type = body.get("event_type", "system_status")
        data = body.get("data", {"message": "test event", "source": "trio_sse"})
        new = hub.prepare(event_type, data, body.get("project_id"))
        if open_to_publishers:
            require_publish(principal, (new.project_id,))
        hub.admit_publish(principal.sub or request.remote_addr or "", 1)
        (event_id,) = await hub.publish_prepared([new])
        if hub.settings.test_event == "admin":
            audit_admin_action("test_event", principal, 202, event_id=event_id, event_type=new.type)
        return json_response({"id": event_id, "event_type": new.type}, 202)

    @bp.post("/sse/subscribe")
    async def subscribe() -> Response:
        hub = get_hub()
        principal = caller(hub)
        body = json_object(await read_json(hub.settings.max_body_bytes), "body")
        connection_id = body.get("connection_id")
        if not isinstance(connection_id, str) or not connection_id:
            raise ApiError(400, "invalid_request", "connection_id must be a non-empty string")
        event_types = body.get("event_types")
        if not isinstance(event_types, list) or not all(isinstance(t, str) for t in event_types):
            raise ApiError(400, "invalid_request", "event_types must be a list of strings")
        mode = parse_mode(body.get("mode", "replace"))  # here, so a bad mode is a 400 before a 404
        last_event_id = body.get("last_event_id")
        if last_event_id is not None and (
            not isinstance(last_event_id, str)
            or not 0 < len(last_event_id) <= MAX_EVENT_ID_LENGTH
            or has_forbidden_characters(last_event_id)
        ):
            raise ApiError(
                400,
                "invalid_request",
                f"last_event_id must be a string of 1-{MAX_EVENT_ID_LENGTH} characters"
                " without control characters or line separators",
            )
        # Here too, so a bad rewind is a 400 before a 404.
        rewind = check_subscribe_rewind(body.get("rewind", 0), last_event_id, hub.settings.max_rewind)
        connection = hub.get_connection(connection_id)
        foreign = hub.settings.auth_enabled and connection.client.owner != principal.sub
        if foreign and not principal.admin:
            raise ApiError(403, "forbidden", "this connection belongs to someone else")
        project_id = UNSET
        if "project_id" in body:
            project_id = check_project_id(body["project_id"])  # a 400 before any rights check
            require_project(principal, project_id)
            # The stream stays within the rights of the token that opened it, whoever moves it
            # (an admin, or another token of the same subject with wider rights).
            bound = connection.client.projects
            if bound is not None and project_id not in bound:
                raise ApiError(
                    403, "forbidden", f"this stream was opened with a token that may not read {project_id!r}"
                )
        hub.update_subscription(
            connection_id,
            event_types,
            mode=mode,
            project_id=project_id,
            last_event_id=last_event_id,
            tags=body["tags"] if "tags" in body else UNSET,
            rewind=rewind,
        )
        described = hub.describe(connection)
        if foreign:
            owner = connection.client.owner
            audit_admin_action("change_foreign_subscription", principal, 200, connection_id=connection_id, owner=owner)
        return json_response(described)

    @bp.get("/sse/stats")
    async def stats() -> Response:
        hub = get_hub()
        await hub.backend.refresh_stats()
        return json_response(hub.snapshot())

    @bp.get("/sse/connections")
    async def connections() -> Response:
        hub = get_hub()
        principal = caller(hub)
        require_admin(principal, hub.settings)
        limit = _int_param("limit", 100, 1, MAX_CONNECTIONS_PAGE)
        offset = _int_param("offset", 0, 0)
        project = check_project_id(request.args.get("project", request.args.get("project_id")))
        live = hub.connections()
        if project is not None:
            live = [c for c in live if c.subscription.project_id == project]
        page = live[offset : offset + limit]
        audit_admin_action("list_connections", principal, 200, listed=len(page), project=project)
        return json_response(
            {
                "total": len(live),
                "limit": limit,
                "offset": offset,
                "connections": [connection_entry(hub.connection_statistics(c)) for c in page],
            }
        )

    @bp.get("/sse/health")
    async def health() -> Response:
        hub = get_hub()
        status, body = health_answer(hub.statistics(), hub.machine_memory())
        return json_response(body, status)

    @bp.get("/metrics")
    async def metrics() -> Response:
        return Response(render_metrics(metrics_registry), content_type="text/plain; version=0.0.4; charset=utf-8")

    register_browser_routes(bp, get_hub, caller)
    return bp


@functools.lru_cache(maxsize=16)
def _cors_for(origins: tuple[str, ...]) -> CorsPolicy:
    return CorsPolicy(origins)


def _adding_headers(send: Any, extra: list[tuple[bytes, bytes]]) -> Any:
    """``send`` with ``extra`` headers added to the response start."""

    async def send_with_headers(message: Any) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", []), *extra]}
        await send(message)

    return send_with_headers


async def _send_empty(send: Any, status: int, headers: list[tuple[bytes, bytes]]) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"", "more_body": False})


def mount_lean_handlers(app: Quart, get_hub: Callable[[], Hub], prefix: str) -> None:
    """Serve the hot paths — ``GET {prefix}/sse/events`` and ``POST {prefix}/sse/publish`` —
    with lean ASGI handlers in front of ``app``'s ASGI callable; everything else goes to Quart.
    CORS is applied here too, for every route (see :mod:`trio_sse.http.cors`), and so is
    ``max_head_bytes``: a request whose head is larger gets a JSON 431 and reaches no route.
    """
    inner = app.asgi_app
    stream_path, publish_path = prefix + "/sse/events", prefix + "/sse/publish"
    stats_stream_path = prefix + "/sse/stats/stream"

    def current_settings() -> Settings | None:
        try:
            return get_hub().settings
        except RuntimeError:  # no hub yet: the app's other routes are still served
            return None

    def asgi_app(scope: Any, receive: Any, send: Any) -> Awaitable[None]:
        # A plain function returning the handler's awaitable, not a coroutine awaiting it:
        # its frame would otherwise live as long as the request (a stream: hours).
        if scope["type"] != "http":
            return cast(Awaitable[None], inner(scope, receive, send))
        cors_headers: list[tuple[bytes, bytes]] = []
        request_headers = scope.get("headers", [])
        origin = header(request_headers, b"origin", "latin-1")
        # Every request passes here, whatever route serves it: h11 bounds only a head still
        # arriving (h11_max_incomplete_size), so a bigger one sent in one piece gets here.
        settings = current_settings()
        limit = DEFAULT_MAX_HEAD_BYTES if settings is None else settings.max_head_bytes
        size = request_head_size(scope)
        if size > limit:
            error = ApiError(431, "head_too_large", f"the request head is {size} bytes; the limit is {limit}")
            allowed = None if settings is None else _cors_for(settings.cors_origins).response_headers(origin)
            return send_refusal(send, scope, error, allowed)
        if origin is not None:
            policy = _cors_for(get_hub().settings.cors_origins)
            if scope["method"] == "OPTIONS" and header(
                scope.get("headers", []), b"access-control-request-method", "latin-1"
            ):
                try:
                    headers = policy.preflight(
                        origin, header(scope.get("headers", []), b"access-control-request-headers", "latin-1")
                    )
                except ApiError as error:
                    return send_refusal(send, scope, error)
                return _send_empty(send, 204, headers)
            cors_headers = policy.response_headers(origin)
        path, method = scope["path"], scope["method"]
        if path == stream_path and method == "GET":
            # The stream keeps hypercorn's own send (the direct-write path needs it).
            return serve_stream(get_hub(), scope, receive, send, extra_headers=cors_headers or None)
        if path == stats_stream_path and method == "GET":
            # Same reason: the send deadline's abort needs hypercorn's own send.
            return serve_stats_stream(get_hub(), scope, receive, send, extra_headers=cors_headers)
        if cors_headers:
            send = _adding_headers(send, cors_headers)
        if path == publish_path and method == "POST":
            return serve_publish(get_hub(), scope, receive, send)
        if path in (stream_path, publish_path):
            is_stream = path == stream_path
            message = "use GET to open a stream" if is_stream else "use POST to publish"
            allow = "GET" if is_stream else "POST"
            return send_refusal(send, scope, ApiError(405, "method_not_allowed", message, headers={"Allow": allow}))
        send = final_send_shielded(scope, send, get_hub().settings.send_timeout)
        return cast(Awaitable[None], inner(scope, receive, send))

    app.asgi_app = asgi_app  # type: ignore[method-assign,assignment]

"""``create_app()``: the quart-trio application, for hypercorn or for embedding.

``hypercorn --worker-class trio 'trio_sse.app:create_app()'`` calls it with no hub:
the app then opens its own hub while it serves (settings from the environment).
Embedders pass the hub they opened with :func:`trio_sse.open_hub`.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator

from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from .http.auth import MIN_SECRET_BYTES, authenticator_for
from .http.hypercorn_trio import lifespan_adopting_idle_timeout
from .http.routes import http_exception_response, make_blueprint
from .runtime.gctune import tune_gc
from .runtime.hub import Hub, open_hub
from .settings import Settings, SettingsError, load_settings

__all__ = ["create_app"]


class _HubSlot:
    """Holds the hub of an app that opens its own, once serving has started."""

    hub: Hub | None = None

    def get(self) -> Hub:
        if self.hub is None:
            raise RuntimeError("the trio_sse hub is not running (the app is not serving)")
        return self.hub


def check_servable(settings: Settings) -> None:
    """Raise :class:`SettingsError` for settings no server may run with: the prod profile
    without token auth or with an HS256 secret under :data:`MIN_SECRET_BYTES`, or a key
    that cannot be loaded (checked now, not at the first request)."""
    if settings.profile == "prod" and not settings.auth_enabled:
        raise SettingsError("the prod profile requires token auth: set jwt_secret or jwt_public_key")
    if settings.profile == "prod" and settings.jwt_secret:
        size = len(settings.jwt_secret.encode())
        if size < MIN_SECRET_BYTES:
            raise SettingsError(
                f"jwt_secret is {size} bytes; the prod profile requires at least {MIN_SECRET_BYTES}"
                " (an HS256 key as long as its 256-bit hash, RFC 7518 3.2): use 32 random bytes or more"
            )
    authenticator_for(settings)


def create_app(hub: Hub | None = None, settings: Settings | None = None) -> QuartTrio:
    """The trio_sse HTTP app.

    With ``hub``, the app serves that hub and never closes it (its owner does). Without,
    it opens a hub from ``settings`` (default: :func:`load_settings` from the
    environment) when serving starts and closes it when serving ends.
    """
    app = QuartTrio("trio_sse")
    slot = _HubSlot()
    if hub is not None:
        slot.hub = hub
        settings = hub.settings
    else:
        settings = settings or load_settings()
        owned_settings = settings

        @app.while_serving
        async def run_hub() -> AsyncGenerator[None, None]:
            tune_gc()  # this app owns the process (hypercorn CLI): see runtime/gctune.py
            async with open_hub(owned_settings) as owned:
                slot.hub = owned
                try:
                    yield
                finally:
                    slot.hub = None

        # This app owns the server (the hypercorn CLI): its keep-alive is our idle_timeout.
        app.asgi_lifespan_class = lifespan_adopting_idle_timeout(owned_settings.idle_timeout)

    check_servable(settings)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.config["BACKGROUND_TASK_SHUTDOWN_TIMEOUT"] = settings.shutdown_grace
    app.register_blueprint(make_blueprint(slot.get))

    @app.errorhandler(HTTPException)
    async def json_errors(error: HTTPException):  # type: ignore[no-untyped-def]
        return http_exception_response(error)

    logger = logging.getLogger("trio_sse")
    logger.setLevel(settings.log_level.upper())
    if hub is None and not logger.handlers and not logging.getLogger().handlers:
        # Served by the hypercorn CLI, which configures only its own loggers: without a
        # handler the one-line refusal logs would be lost.
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
        logger.addHandler(handler)
    app.extensions["trio_sse"] = slot
    return app

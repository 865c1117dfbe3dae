"""trio_sse: a Server-Sent Events hub built on Trio's structured concurrency.

Embedding::

    async with trio_sse.open_hub(settings) as hub:
        app = trio_sse.create_app(hub=hub)
        nursery.start_soon(trio_sse.serve, app, settings)
        await hub.publish("progress_update", {"progress": 75}, project_id="p1")
"""

from __future__ import annotations

from typing import Any

from .app import create_app
from .http.routes import make_blueprint
from .runtime.hub import Hub, open_hub
from .server import serve
from .settings import Settings, SettingsError, load_settings

__all__ = ["Hub", "Settings", "SettingsError", "blueprint", "create_app", "load_settings", "open_hub", "serve"]
__version__ = "0.1.0"


def blueprint(hub: Hub, *, name: str = "trio_sse") -> Any:
    """The API as a Quart blueprint serving ``hub``; registering it also mounts ``/sse/events``."""
    return make_blueprint(lambda: hub, name=name)

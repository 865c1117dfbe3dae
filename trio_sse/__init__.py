"""trio_sse: a Server-Sent Events hub built on Trio's structured concurrency.

Embedding::

    async with trio_sse.open_hub(settings) as hub:
        app = trio_sse.create_app(hub=hub)
        nursery.start_soon(trio_sse.serve, app, settings)
        await hub.publish("progress_update", {"progress": 75}, project_id="p1")

The top-level names resolve lazily (PEP 562 ``__getattr__``): ``import trio_sse.client``,
``trio_sse.core`` or ``trio_sse.testing`` must not pay for (or depend on) the server side
— hypercorn, quart and the hub — which ``trio_sse.create_app`` and friends import on
first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .app import create_app
    from .runtime.hub import Hub, open_hub
    from .server import serve
    from .settings import Settings, SettingsError, load_settings

__all__ = ["Hub", "Settings", "SettingsError", "blueprint", "create_app", "load_settings", "open_hub", "serve"]
__version__ = "0.1.0"

#: Where each lazily resolved top-level name lives (module, attribute).
_LAZY = {
    "create_app": ("trio_sse.app", "create_app"),
    "Hub": ("trio_sse.runtime.hub", "Hub"),
    "open_hub": ("trio_sse.runtime.hub", "open_hub"),
    "serve": ("trio_sse.server", "serve"),
    "Settings": ("trio_sse.settings", "Settings"),
    "SettingsError": ("trio_sse.settings", "SettingsError"),
    "load_settings": ("trio_sse.settings", "load_settings"),
}


def __getattr__(name: str) -> Any:
    try:
        module, attribute = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'trio_sse' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value  # resolved once; later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


def blueprint(hub: Hub, *, name: str = "trio_sse") -> Any:
    """The API as a Quart blueprint serving ``hub``; registering it also mounts ``/sse/events``."""
    from .http.routes import make_blueprint

    return make_blueprint(lambda: hub, name=name)

"""HTTP layer: the quart-trio blueprint, the lean ASGI stream handler, JSON errors."""

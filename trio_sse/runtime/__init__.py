"""Trio runtime: the hub (publish, fan-out, registry, stats), connection tasks and backends.

Knows nothing of HTTP: a connection writes through a small :class:`Transport`
protocol that the HTTP layer (or a test) provides.
"""

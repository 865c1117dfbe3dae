"""Sans-IO core: the event model, the wire format, the replay history and filter matching.

Nothing in this package may import trio, quart or hypercorn: it is plain data in,
plain data out, so it can be property-tested and reused by any runtime.
"""

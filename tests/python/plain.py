"""JSON-friendly values from Arrow/DuckDB results: bytes as UTF-8 text, timestamps as ISO 8601."""


def plain(v):
    if isinstance(v, (bytes, bytearray)):
        return v.decode()
    if hasattr(v, "isoformat"):
        return v.isoformat()
    return v

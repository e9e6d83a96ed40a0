"""Schemathesis hooks for tests/test_openapi_schemathesis.py (loaded via SCHEMATHESIS_HOOKS):
the edge routes take msgpack, which the document describes as binary; send those bytes as they are."""
import schemathesis

schemathesis.serializer.alias("application/msgpack", "application/octet-stream")

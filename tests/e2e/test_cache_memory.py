"""The cache suite on the embedded in-process backend, plus its byte cap."""
import json

import harness
from cache_suite import *  # noqa: F401,F403 - the shared suite
from cache_suite import get, post, cache_get


def test_backend_is_memory(srv):
    assert get(srv, "/cache/type").json() == {"type": "memory"}
    assert get(srv, "/redis/configured").json() == {"configured": False}
    j = get(srv, "/redis/ping").json()
    assert j["ok"] is False and "not configured" in j["err"], j


def test_byte_cap_lru(srv):
    # DEVLOOP_CACHE_MAX_BYTES is 4 MiB: ~12 MiB of barely compressible values
    # evicts the least recently used ones
    import random
    rnd = random.Random(7)
    for i in range(120):
        v = "".join(rnd.choice("0123456789abcdefghijklmnopqrstuvwxyz") for _ in range(100000))
        post(srv, "/cache/set", {"key": "query:cap%d" % i, "value": v})
    assert cache_get(srv, "query:cap119") is not None
    gone = sum(1 for i in range(40) if cache_get(srv, "query:cap%d" % i) is None)
    assert gone >= 30, "%d of the 40 oldest were evicted" % gone


ALLOWED_ERRORS = ["forever"]

if __name__ == "__main__":
    harness.main(globals(), app="cache", env={"DEVLOOP_CACHE_MAX_BYTES": str(4 << 20)})

"""The document-store suite of test_db.py against MongoDB. No MongoDB server
can be installed on these machines: the suite runs when
DEVLOOP_TEST_MONGO_URI is set and is reported as skipped (exit 77) when not."""
import os
import sys

import harness

URI = os.environ.get("DEVLOOP_TEST_MONGO_URI")
if not URI:
    print("# skipped: DEVLOOP_TEST_MONGO_URI not set (no MongoDB server on this machine)")
    print("0 passed, 0 failed, 1 skipped")
    sys.exit(77)

import test_db  # noqa: E402 - only with a server

SQLITE_ONLY = {"test_backend", "test_index_is_used", "test_kill_9_during_writes",
               "test_concurrent_writers_several_workers"}
tests = {k: v for k, v in vars(test_db).items()
         if k.startswith("test_") and k not in SQLITE_ONLY}


def test_backend_is_mongodb(srv):
    assert srv.get("/db/type").json() == {"type": "mongodb"}


tests["test_backend_is_mongodb"] = test_backend_is_mongodb
tests["ALLOWED_ERRORS"] = []

if __name__ == "__main__":
    harness.main(tests, app="db", env={"MONGO_URI": URI})

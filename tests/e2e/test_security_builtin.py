"""Issue 17, item 6: error details. Batch operations show the errors they
raise on purpose and only a generic message with the request id for a bug,
whose traceback goes to the log."""
import json
import re

import harness
from harness import Server

JSON = {"Content-Type": "application/json"}


def batch(srv, ops):
    r = srv.request("POST", "/batch", JSON, json.dumps({"operations": ops}))
    assert r.status == 200, r
    return r, {x["id"]: x for x in r.json()["results"]}


def test_batch_deliberate_errors_are_shown(srv):
    _, res = batch(srv, [{"id": n, "type": n} for n in
                         ("raised", "raised0", "asserted", "status", "returned", "soft")] +
                   [{"id": "ok", "type": "ok", "params": {"v": 1}}])
    assert res["raised"] == {"id": "raised", "error": "feature not found"}, res
    assert res["raised0"] == {"id": "raised0", "error": "no position here"}, res
    assert res["asserted"] == {"id": "asserted", "error": "v is required"}, res
    assert res["status"] == {"id": "status", "error": "no such feature", "status": 404}, res
    assert res["returned"] == {"id": "returned", "error": "already done", "status": 409}, res
    assert res["soft"] == {"id": "soft", "error": "soft failure"}, res
    assert res["ok"] == {"id": "ok", "result": {"echo": 1}}, res


INTERNAL = ("nilindex", "callnil", "badarg", "missing_module", "child", "tableerr")


def test_batch_internal_errors_are_generic_and_logged(srv):
    r, res = batch(srv, [{"id": n, "type": n} for n in INTERNAL])
    rid = r.header("x-request-id")
    for n in INTERNAL:
        assert res[n] == {"id": n, "error": "internal error (request %s)" % rid}, res[n]
    body = r.body.decode()
    assert ".lua" not in body and "/" not in body and "attempt to" not in body, body
    # the log has what the client does not: the message and the traceback
    out = srv.output()
    assert "attempt to index field 'missing'" in out and "stack traceback" in out, out[-3000:]
    assert "no_such_module_here" in out and rid in out, out[-3000:]
    assert len(re.findall(r"batch operation failed", out)) >= len(INTERNAL), out[-3000:]


def test_batch_operation_type_must_be_a_string(srv):
    _, res = batch(srv, [{"id": 1, "type": {"x": 1}}, {"id": 2, "type": "nope"}])
    assert res[1]["error"] == "an operation needs a type (a string)", res
    assert res[2]["error"] == "unknown operation type: nope", res


ALLOWED_ERRORS = ["batch operation failed"]

if __name__ == "__main__":
    harness.main(globals(), app="sec-builtin")

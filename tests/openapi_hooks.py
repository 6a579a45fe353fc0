"""Schemathesis hooks for tests/openapi.rs (loaded through SCHEMATHESIS_HOOKS)."""

import schemathesis

# Webhooks the fuzzer creates are test-fired (`POST .../test`) and sent the
# events its own calls cause. Whatever `url` it generated, they go to a closed
# port on loopback: the run never sends a request off this machine.
LOOPBACK = "http://127.0.0.1:9/hook"


@schemathesis.hook
def before_call(context, case, kwargs):
    if not case.operation.path.startswith("/admin/v1/webhooks"):
        return
    if isinstance(case.body, dict) and isinstance(case.body.get("url"), str):
        case.body["url"] = LOOPBACK


# Some generated query parameters never reach the wire: one with an empty
# name, and one whose value is None, an empty object, or a list of nothing
# sendable (the HTTP client sends nothing for those). A case meant to break
# the schema with one (as an undeclared parameter) then arrives as a valid
# request and is wrongly reported as accepted. Such cases test nothing
# berth can see: leave them out.
def _empty(value):
    if value is None:
        return True
    if isinstance(value, dict):
        return len(value) == 0
    if isinstance(value, (list, tuple)):
        # Lists are sent item by item: `[[]]` sends nothing either.
        return all(_empty(item) for item in value)
    return False


def _not_sent(name, value):
    return name == "" or _empty(value)


@schemathesis.hook
def filter_query(context, query):
    return not any(_not_sent(name, value) for name, value in (query or {}).items())

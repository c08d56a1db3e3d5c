"""Schemathesis hooks of Wyvern's API fuzz test (crates/wyvern/tests/suite/fuzz_api.rs): the ids the
server hands out, for the requests that follow to refer to.

Schemathesis fills an id (a path parameter `<resource>_id`, or a body field `<resource>_id` or
`..._<resource>_id` at any depth) with a random UUID, which names nothing: the server answers 404
and the code behind the lookup is never reached. `after_call` keeps the ids of the objects that
answers show (created, listed, shown); `before_call` replaces, half of the time, a well-formed UUID
in such a place with a kept id of that kind. Malformed values are left alone: they try the
validators.
"""

import json
import random
import re

import schemathesis

# Kept ids by resource (`network`), the most recent last.
POOL: dict[str, list[str]] = {}
# Most ids kept of one kind: enough to choose from, bounded however long the run.
KEEP = 64
# Fields whose names do not say what they refer to.
ALIASES = {"remote_group_id": "security_group"}
UUID = re.compile(r"^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")
RNG = random.Random(0)


def keep(kind: str, obj: object) -> None:
    if isinstance(obj, dict) and isinstance(obj.get("id"), str):
        ids = POOL.setdefault(kind, [])
        if obj["id"] not in ids:
            ids.append(obj["id"])
            del ids[:-KEEP]


@schemathesis.hook
def after_call(context, case, response):
    if not 200 <= response.status_code < 300 or not response.content:
        return
    try:
        body = json.loads(response.content)
    except ValueError:
        return
    if not isinstance(body, dict):
        return
    for key, value in body.items():
        if isinstance(value, list):
            # A list or a bulk create: `networks` holds networks.
            for item in value:
                keep(key.removesuffix("s"), item)
        else:
            keep(key, value)


def kind_of(field: str) -> str | None:
    """The kind of object a field (`floating_network_id`) refers to, if one is kept."""
    if field in ALIASES:
        return ALIASES[field] if ALIASES[field] in POOL else None
    if not field.endswith("_id"):
        return None
    name = field.removesuffix("_id")
    # The longest kept kind the name ends with: `remote_address_group` is an address group.
    kinds = [k for k in POOL if name == k or name.endswith("_" + k)]
    return max(kinds, key=len, default=None)


def refer(field: str, value: object) -> object:
    kind = kind_of(field)
    if kind and isinstance(value, str) and UUID.match(value) and RNG.random() < 0.5:
        return RNG.choice(POOL[kind])
    return value


def refer_within(value: object) -> object:
    if isinstance(value, dict):
        return {k: refer_within(refer(k, v)) for k, v in value.items()}
    if isinstance(value, list):
        return [refer_within(v) for v in value]
    return value


@schemathesis.hook
def before_call(context, case, kwargs):
    if case.path_parameters:
        for name, value in case.path_parameters.items():
            case.path_parameters[name] = refer(name, value)
    if isinstance(case.body, (dict, list)):
        case.body = refer_within(case.body)

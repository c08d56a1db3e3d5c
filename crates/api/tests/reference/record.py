#!/usr/bin/env python3
"""Replays scenario.json against a Neutron-compatible server and records every exchange.

The recording (neutron-recording.json next to this file) is the test data of tests/suite/conformance.rs: for each
step the request as sent (method, path, headers, body) and the answer (status and JSON body), plus the
values the step bound for later steps. Python standard library only.

    record.py [--base-url http://127.0.0.1:19697] [--scenario scenario.json] [--out neutron-recording.json]

With --scenario octavia-scenario.json --out octavia-recording.json --base-url http://127.0.0.1:19876 it
records the reference Octavia (../shared/tools/reference-octavia/run.sh, a fresh one): the scenario's
'reference_bound' values stand for what its Wyvern-only 'setup' steps bind, and 'pause_after_writes'
lets Octavia's worker finish after each write.

Start the reference Neutron first with run-reference.sh (it makes the X-Project-Id/X-Roles headers the request
context). Steps whose status differs from the scenario's 'expect' are listed on stderr; they are recorded
all the same, since the recording states what Neutron does, not what the scenario author guessed.
"""

import argparse
import json
import os
import re
import sys
import time
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
PLACEHOLDER = re.compile(r"\{([A-Za-z0-9_]+)\}")


class ScenarioError(Exception):
    """The scenario refers to a value no earlier step bound, or binds a path the answer lacks."""


def substitute_text(text, bound):
    """Replaces every '{name}' of a bound name inside a string; other braces stay as they are."""

    def one(match):
        name = match.group(1)
        if name not in bound:
            raise ScenarioError(f"placeholder {{{name}}} is not bound by an earlier step")
        return str(bound[name])

    return PLACEHOLDER.sub(one, text)


def substitute(value, bound):
    """Substitutes placeholders throughout a JSON value; a string that is only '{name}' keeps the type."""
    if isinstance(value, str):
        whole = PLACEHOLDER.fullmatch(value)
        if whole and whole.group(1) in bound:
            return bound[whole.group(1)]
        return substitute_text(value, bound)
    if isinstance(value, list):
        return [substitute(item, bound) for item in value]
    if isinstance(value, dict):
        return {key: substitute(item, bound) for key, item in value.items()}
    return value


def lookup(body, path):
    """Follows a dotted path such as 'ports[1].id' or 'port_id' into a JSON body."""
    value = body
    for part in path.split("."):
        match = re.fullmatch(r"([^\[\]]+)((?:\[\d+\])*)", part)
        if not match:
            raise ScenarioError(f"bad bind path {path!r}")
        try:
            value = value[match.group(1)]
            for index in re.findall(r"\[(\d+)\]", match.group(2)):
                value = value[int(index)]
        except (KeyError, IndexError, TypeError) as err:
            raise ScenarioError(f"bind path {path!r} not in the answer ({err!r})") from err
    return value


def send(base_url, method, path, headers, data):
    """Sends one request and returns (status, parsed JSON body or None, raw text when not JSON)."""
    request = urllib.request.Request(base_url + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as err:
        status, raw = err.code, err.read()
    text = raw.decode("utf-8", errors="replace")
    if not text.strip():
        return status, None, None
    try:
        return status, json.loads(text), None
    except json.JSONDecodeError:
        return status, None, text


def run(scenario, base_url):
    """Runs every step in order; returns the recorded steps and the names of surprising ones."""
    identities = scenario["identities"]
    bound = dict(scenario.get("reference_bound", {}))
    recorded, surprises = [], []
    for step in scenario["steps"]:
        headers = dict(identities[step.get("as", "admin")])
        headers.update(substitute(step.get("headers", {}), bound))
        data = None
        body = None
        if "raw_body" in step:
            data = step["raw_body"].encode()
        elif "body" in step:
            body = substitute(step["body"], bound)
            data = json.dumps(body).encode()
        if data is not None:
            headers["Content-Type"] = "application/json"
        headers["Accept"] = "application/json"
        path = substitute_text(step["path"], bound)
        status, answer, raw_text = send(base_url, step["method"], path, headers, data)
        if step["method"] != "GET":
            time.sleep(scenario.get("pause_after_writes", 0))
        entry = {
            "name": step["name"],
            "request": {"method": step["method"], "path": path, "headers": headers},
            "response": {"status": status, "body": answer},
        }
        if body is not None:
            entry["request"]["body"] = body
        if "raw_body" in step:
            entry["request"]["raw_body"] = step["raw_body"]
        if raw_text is not None:
            entry["response"]["text"] = raw_text
        binds = {}
        for name, where in step.get("bind", {}).items():
            if answer is None:
                raise ScenarioError(f"step {step['name']}: status {status} without a body, cannot bind {name}")
            try:
                binds[name] = lookup(answer, where)
            except ScenarioError as err:
                raise ScenarioError(f"step {step['name']}: {err}; status {status}: {answer}") from err
        bound.update(binds)
        if binds:
            entry["bound"] = binds
        recorded.append(entry)
        if step.get("expect") not in (None, status):
            surprises.append(f"{step['name']}: expected {step['expect']}, got {status}: {answer or raw_text}")
    return recorded, surprises


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-url", default="http://127.0.0.1:19697")
    parser.add_argument("--scenario", default=os.path.join(HERE, "scenario.json"))
    parser.add_argument("--out", default=os.path.join(HERE, "neutron-recording.json"))
    args = parser.parse_args()
    with open(args.scenario, encoding="utf-8") as handle:
        scenario = json.load(handle)
    base_url = args.base_url.rstrip("/")
    try:
        steps, surprises = run(scenario, base_url)
    except ScenarioError as err:
        print(f"scenario error: {err}", file=sys.stderr)
        return 2
    with urllib.request.urlopen(base_url + "/", timeout=10) as response:
        versions = json.load(response)
    recording = {
        "about": "Answers of the reference Neutron (neutron 29, ml2/openvswitch, SQLite, no agents) to "
        "scenario.json, recorded by record.py. Test data for tests/suite/conformance.rs; do not edit by hand.",
        "base_url": base_url,
        "versions": versions,
        "steps": steps,
    }
    with open(args.out, "w", encoding="utf-8") as handle:
        json.dump(recording, handle, indent=1, sort_keys=False)
        handle.write("\n")
    for line in surprises:
        print(f"unexpected status: {line}", file=sys.stderr)
    print(f"recorded {len(steps)} steps into {args.out} ({len(surprises)} with an unexpected status)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

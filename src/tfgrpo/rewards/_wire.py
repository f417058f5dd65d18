"""Plain data between the judge and the candidate: a tagged JSON encoding, one message per line.

Standard library only and self-contained: `unittest_reward.py` puts this file's source at the top of
the sandboxed program (the candidate's side, `serve`), and the judge (`_judge.py`) imports it.

Every value is a list `[tag, payload]`: ["N"] None, ["b", bool], ["i", hex] int, ["f", float.hex()]
float (nan and inf included), ["c", [re, im]] complex, ["s", str], ["y", base64] bytes, ["l", [...]]
list, ["t", [...]] tuple, ["d", [[k, v], ...]] dict, ["S", [...]] set, ["F", [...]] frozenset.
`decode` treats its input as hostile: every tag and payload type is checked exactly, nesting is
limited to `MAX_DEPTH`, and what comes out is made of fresh built-in objects only, so no method of the
sender's (an `__eq__` that is always True, say) survives the trip.
"""

import base64
import binascii
import json
import os
import re

MAX_DEPTH = 100
_HEX = re.compile(r"-?[0-9a-f]+")


class WireError(ValueError):
    """A value that cannot be sent, or a message that is not a valid encoding."""


def encode(value, depth=0):
    """`value` as tagged JSON-able data; WireError for a type the tests cannot receive."""
    if depth > MAX_DEPTH:
        raise WireError(f"the value is nested more than {MAX_DEPTH} levels deep")
    down = depth + 1
    if value is None:
        return ["N"]
    if isinstance(value, bool):
        return ["b", value is True]
    if isinstance(value, int):
        return ["i", format(int.__int__(value), "x")]
    if isinstance(value, float):
        return ["f", float.hex(float.__float__(value))]
    if isinstance(value, complex):
        return ["c", [float.hex(value.real), float.hex(value.imag)]]
    if isinstance(value, str):
        return ["s", str.__str__(value)]
    if isinstance(value, bytes | bytearray):
        return ["y", base64.b64encode(bytes(value)).decode()]
    # Each container is read through the built-in type's own `__iter__`, so a subclass's never runs.
    if isinstance(value, list):
        return ["l", [encode(v, down) for v in list.__iter__(value)]]
    if isinstance(value, tuple):
        return ["t", [encode(v, down) for v in tuple.__iter__(value)]]
    if isinstance(value, set):
        return ["S", [encode(v, down) for v in set.__iter__(value)]]
    if isinstance(value, frozenset):
        return ["F", [encode(v, down) for v in frozenset.__iter__(value)]]
    if isinstance(value, dict):
        return ["d", [[encode(k, down), encode(v, down)] for k, v in dict.items(value)]]
    raise WireError(
        f"a {type(value).__name__} cannot be sent to the tests; return plain data (None, bool, int, float, "
        "complex, str, bytes, list, tuple, dict, set, frozenset)"
    )


def decode(node, depth=0):
    """The value `node` encodes, built from fresh built-in objects; WireError for anything else."""
    if depth > MAX_DEPTH:
        raise WireError(f"the value is nested more than {MAX_DEPTH} levels deep")
    if type(node) is not list or not node or type(node[0]) is not str:
        raise WireError("not a tagged value")
    tag = node[0]
    if node == ["N"]:
        return None
    if len(node) != 2:
        raise WireError(f"a {tag!r} value needs exactly one payload")
    payload, down = node[1], depth + 1
    try:
        if tag == "b" and type(payload) is bool:
            return payload
        if tag == "i" and type(payload) is str and _HEX.fullmatch(payload):
            return int(payload, 16)
        if tag == "f" and type(payload) is str:
            return float.fromhex(payload)
        if tag == "c" and type(payload) is list and len(payload) == 2 and all(type(p) is str for p in payload):
            return complex(float.fromhex(payload[0]), float.fromhex(payload[1]))
        if tag == "s" and type(payload) is str:
            return payload
        if tag == "y" and type(payload) is str:
            return base64.b64decode(payload, validate=True)
        if tag in ("l", "t", "S", "F") and type(payload) is list:
            items = [decode(item, down) for item in payload]
            return {"l": list, "t": tuple, "S": set, "F": frozenset}[tag](items)
        if tag == "d" and type(payload) is list:
            pairs = []
            for pair in payload:
                if type(pair) is not list or len(pair) != 2:
                    raise WireError("a dict item is not a [key, value] pair")
                pairs.append((decode(pair[0], down), decode(pair[1], down)))
            return dict(pairs)
    except (TypeError, ValueError, OverflowError, binascii.Error) as error:  # unhashable key, bad number, ...
        raise WireError(f"bad {tag!r} value: {error}") from None
    raise WireError(f"unknown tag or payload type: {tag[:20]!r}")


def dumps(message):
    """One message as a line of bytes (JSON with only ASCII, so it holds no newline)."""
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


def loads(line):
    """The JSON of one line; WireError when it is not JSON (too deep for the parser included)."""
    try:
        return json.loads(line)
    except (ValueError, RecursionError) as error:
        raise WireError(f"not JSON: {str(error)[:200]}") from None


def serve(namespace, request_fd, response_fd):
    """The candidate's side: say "ready", then answer each ["call", name, args, kwargs] with ["ok",
    value] or ["raised", type name, message], until the judge closes its end."""
    pid = os.getpid()
    requests = os.fdopen(request_fd, "rb", buffering=1 << 16)

    def send(message):
        data = dumps(message)
        while data:
            data = data[os.write(response_fd, data) :]

    send(["ready"])
    for line in requests:
        _, name, args, kwargs = loads(line)
        try:
            function = namespace.get(name)
            if function is None:
                raise NameError(f"name {name!r} is not defined")
            reply = ["ok", encode(function(*decode(args), **decode(kwargs)))]
        except BaseException as error:  # noqa: BLE001 - whatever the candidate raised is its answer
            reply = ["raised", type(error).__name__, _message(error)]
        if os.getpid() != pid:  # a process the candidate forked came back here: it has no say
            os._exit(0)
        send(reply)


def _message(error):
    try:
        return str(error)[:1000]
    except BaseException:  # noqa: BLE001
        return "(the exception's message could not be read)"

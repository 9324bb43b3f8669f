"""Strict decoders shared by the envelope and payload parsers.

Both raise `Reject` with a human-readable reason; the caller turns it into the
`BundleError` subclass and code that fits its context.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import NoReturn

from .errors import BundleError

# RFC 4648 §5: the URL-safe alphabet differs from the standard one (§4) only in
# the two characters for values 62 and 63.
_URLSAFE_TO_STANDARD = str.maketrans("-_", "+/")

# Longest integer literal we accept: 2^63-1 has 19 digits, plus an optional sign.
_MAX_INT_LITERAL = 20


class Reject(Exception):
    """Internal: input rejected, with a reason suitable for an error message."""


def _no_duplicates(pairs: list[tuple[str, object]]) -> dict[str, object]:
    result: dict[str, object] = {}
    for key, value in pairs:
        if key in result:
            raise Reject(f"duplicate JSON object key {key!r}")
        result[key] = value
    return result


def _strict_int(literal: str) -> int:
    if len(literal) > _MAX_INT_LITERAL:
        raise Reject(f"integer literal too long: got {len(literal)} characters, want <= 20")
    value = int(literal)
    # JSON (RFC 8259 §6) already forbids leading zeros; "-0" is the one remaining
    # second spelling of a number, caught by the round trip.
    if str(value) != literal:
        raise Reject(f"non-canonical integer: got {literal!r}, want {str(value)!r}")
    return value


class NonInteger:
    """A JSON number with a fraction or exponent. No field of our formats accepts one;
    decoding keeps the literal so the schema check can name the field in its error.
    """

    __slots__ = ("literal",)

    def __init__(self, literal: str) -> None:
        self.literal = literal


def _no_constant(name: str) -> NoReturn:
    raise Reject(f"{name} is not JSON (RFC 8259 §6)")


def strict_json(data: bytes) -> object:
    """Decode UTF-8 JSON, refusing duplicate keys, NaN/Infinity and "-0".

    Numbers with a fraction or exponent decode to `NonInteger`, which no schema accepts.
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Reject(f"not UTF-8: {exc.reason} at byte {exc.start}") from None
    try:
        return json.loads(
            text,
            object_pairs_hook=_no_duplicates,
            parse_int=_strict_int,
            parse_float=NonInteger,
            parse_constant=_no_constant,
        )
    except RecursionError:
        raise Reject("JSON nested too deeply") from None
    except json.JSONDecodeError as exc:
        raise Reject(f"invalid JSON: {exc.msg} at character {exc.pos}") from None


def strict_b64(text: str, *, allow_urlsafe: bool) -> bytes:
    """Decode padded base64 (RFC 4648 §4, or §5 if allowed), requiring a canonical round trip.

    Rejects whitespace, characters outside the alphabet, a mix of the two alphabets,
    missing or extra padding, and non-zero pad bits (the round trip catches those).
    """
    if not text.isascii():
        raise Reject("base64 contains non-ASCII characters")
    standard = text
    if allow_urlsafe and ("-" in text or "_" in text):
        if "+" in text or "/" in text:
            raise Reject("base64 mixes the standard and URL-safe alphabets")
        standard = text.translate(_URLSAFE_TO_STANDARD)
    try:
        raw = base64.b64decode(standard, validate=True)
    except binascii.Error as exc:
        raise Reject(f"invalid base64: {exc}") from None
    canonical = base64.b64encode(raw).decode("ascii")
    if canonical != standard:
        if standard is not text:
            canonical = base64.urlsafe_b64encode(raw).decode("ascii")
        raise Reject(f"non-canonical base64: got {_clip(text)}, want {_clip(canonical)}")
    return raw


def _clip(text: str, limit: int = 24) -> str:
    # The difference is at the end (pad bits, padding), so show the tail.
    return repr(text) if len(text) <= limit else "..." + repr(text[-limit:])


def json_type(value: object) -> str:
    """The JSON type name of a decoded value, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, NonInteger):
        return f"non-integer number {value.literal[:24]}"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def exact_object(
    name: str, obj: object, want: frozenset[str], error: type[BundleError]
) -> dict[str, object]:
    """Return obj if it is a JSON object with exactly the fields `want`, else raise `error`."""
    if not isinstance(obj, dict):
        raise error(f"{name}: got {json_type(obj)}, want object")
    got = set(obj)
    if got != want:
        raise error(
            f"{name}: unknown fields {sorted(got - want)}, missing fields "
            f"{sorted(want - got)}; want exactly {sorted(want)}"
        )
    return obj

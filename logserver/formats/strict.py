"""Strict decoders of untrusted input, shared by every layer: ONE JSON loader
(`strict_json`), ONE base64 decoder (`decode_base64`) and the field decoders built
on them.

Every decoder takes `what` (the field or document, for the message) and `error`,
the exception class (or any callable taking the message) to raise, so each caller
reports errors in its own family: a `FormatError` subclass here, a `BundleError`
in bundle/, a `VerificationFailure` in the client. Messages say got and want.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable
from typing import NoReturn

ErrorFactory = Callable[[str], Exception]
"""Builds the exception to raise from a message (e.g. an exception class)."""

MAX_UINT63 = (1 << 63) - 1
"""Largest tree size, index or timestamp any C2SP tlog format admits."""

# "ASCII decimal with no leading zeroes (unless the value is 0)", in every spec that
# uses it. int() alone would also take "+1", " 1", "1_0" and non-ASCII digits.
_DECIMAL = re.compile(r"0|[1-9][0-9]*")
_MAX_DECIMAL_DIGITS = 19  # len(str(MAX_UINT63))

# Longest JSON integer literal accepted: 2^63-1 has 19 digits, plus an optional sign.
_MAX_INT_LITERAL = 20

# RFC 4648 §5: the URL-safe alphabet differs from the standard one (§4) only in
# the two characters for values 62 and 63.
_URLSAFE_TO_STANDARD = str.maketrans("-_", "+/")

_HEX_HASH = re.compile(r"[0-9a-f]{64}")


def clip(value: str, limit: int = 40) -> str:
    """repr() of `value`, shortened for error messages."""
    if len(value) <= limit:
        return repr(value)
    return repr(value[:limit]) + f"...({len(value)} characters)"


def _clip_tail(text: str, limit: int = 24) -> str:
    # Two base64 spellings of the same bytes differ at the end (pad bits, padding).
    return repr(text) if len(text) <= limit else "..." + repr(text[-limit:])


def utf8_text(data: bytes | str, what: str, error: ErrorFactory) -> str:
    """`data` decoded as UTF-8 (text is returned as it is)."""
    if isinstance(data, str):
        return data
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"{what}: invalid UTF-8 at byte {exc.start} ({exc.reason})") from None


# --- JSON (RFC 8259) ----------------------------------------------------------------


class _Refused(Exception):
    """Raised inside json.loads' hooks; strict_json turns it into the caller's error."""


class NonInteger:
    """A JSON number with a fraction or exponent. No field of our formats accepts one;
    decoding keeps the literal so the schema check can name the field in its error.
    """

    __slots__ = ("literal",)

    def __init__(self, literal: str) -> None:
        self.literal = literal


def _no_duplicates(pairs: list[tuple[str, object]]) -> dict[str, object]:
    result: dict[str, object] = {}
    for key, value in pairs:
        if key in result:
            raise _Refused(f"duplicate JSON object key {key!r}")
        result[key] = value
    return result


def _strict_int(literal: str) -> int:
    if len(literal) > _MAX_INT_LITERAL:
        raise _Refused(f"integer literal too long: got {len(literal)} characters, want <= {_MAX_INT_LITERAL}")
    value = int(literal)
    # JSON (RFC 8259 §6) already forbids leading zeros; "-0" is the one remaining
    # second spelling of a number, caught by the round trip.
    if str(value) != literal:
        raise _Refused(f"non-canonical integer: got {literal!r}, want {str(value)!r}")
    return value


def _no_constant(name: str) -> NoReturn:
    raise _Refused(f"{name} is not JSON (RFC 8259 §6)")


def strict_json(data: bytes | str, what: str, error: ErrorFactory) -> object:
    """Decode one JSON value from UTF-8 bytes (or text), refusing what JSON parsers
    disagree on or a second spelling would hide: invalid UTF-8 (bytes are never
    guessed to be UTF-16/32), duplicate object keys, NaN/Infinity, "-0", integer
    literals longer than 20 characters, trailing data, and nesting too deep for the
    parser. Numbers with a fraction or exponent decode to `NonInteger`, which no
    schema accepts.
    """
    try:
        return json.loads(
            utf8_text(data, what, error),
            object_pairs_hook=_no_duplicates,
            parse_int=_strict_int,
            parse_float=NonInteger,
            parse_constant=_no_constant,
        )
    except _Refused as exc:
        raise error(f"{what}: {exc}") from None
    except RecursionError:
        raise error(f"{what}: JSON nested too deeply") from None
    except json.JSONDecodeError as exc:
        raise error(f"{what}: invalid JSON: {exc.msg} at character {exc.pos}") from None


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


def exact_object(what: str, obj: object, want: frozenset[str], error: ErrorFactory) -> dict[str, object]:
    """Return obj if it is a JSON object with exactly the fields `want`, else raise `error`."""
    if not isinstance(obj, dict):
        raise error(f"{what}: got {json_type(obj)}, want object")
    got = set(obj)
    if got != want:
        raise error(
            f"{what}: unknown fields {sorted(got - want)}, missing fields "
            f"{sorted(want - got)}; want exactly {sorted(want)}"
        )
    return obj


def json_uint(value: object, what: str, error: ErrorFactory) -> int:
    """A decoded JSON integer in [0, 2^63-1] (not a boolean, not a `NonInteger`)."""
    if type(value) is not int or not 0 <= value <= MAX_UINT63:
        raise error(f"{what}: got {_shown(value)}, want an integer in [0, 2^63-1]")
    return value


def hex_hash(value: object, what: str, error: ErrorFactory) -> bytes:
    """A SHA-256 hash written as 64 lowercase hex digits (the JSON API's spelling)."""
    if not isinstance(value, str) or _HEX_HASH.fullmatch(value) is None:
        raise error(f"{what}: got {_shown(value)}, want 64 lowercase hex digits")
    return bytes.fromhex(value)


def _shown(value: object) -> str:
    if isinstance(value, str):
        return clip(value, 70)
    if isinstance(value, int):  # and bool
        return repr(value)
    return json_type(value)


# --- base64 (RFC 4648) --------------------------------------------------------------


def decode_base64(text: str, what: str, error: ErrorFactory, *, urlsafe: bool = False) -> bytes:
    """Decode padded base64 in the standard alphabet (RFC 4648 §4), or also in the
    URL-safe one (§5) if `urlsafe`, requiring the canonical encoding.

    Refuses non-ASCII, whitespace and other characters outside the alphabet, a mix of
    the two alphabets, missing or extra padding and non-zero pad bits. The re-encoding
    check catches the last: the one way two strings that `b64decode(validate=True)`
    accepts decode to the same bytes.
    """
    if not text.isascii():
        raise error(f"{what}: got {clip(text)}, want base64 (ASCII)")
    standard = text
    if urlsafe and ("-" in text or "_" in text):
        if "+" in text or "/" in text:
            raise error(f"{what}: got {clip(text)}, want one base64 alphabet, not standard and URL-safe mixed")
        standard = text.translate(_URLSAFE_TO_STANDARD)
    try:
        raw = base64.b64decode(standard, validate=True)
    except binascii.Error as exc:
        raise error(f"{what}: got {clip(text)}, want padded base64 ({exc})") from None
    canonical = base64.b64encode(raw).decode("ascii")
    if canonical != standard:
        if standard is not text:
            canonical = base64.urlsafe_b64encode(raw).decode("ascii")
        raise error(f"{what}: non-canonical base64: got {_clip_tail(text)}, want {_clip_tail(canonical)}")
    return raw


def encode_base64(raw: bytes) -> str:
    """Standard padded base64 (RFC 4648 §4) as str."""
    return base64.b64encode(raw).decode("ascii")


# --- the C2SP text formats --------------------------------------------------------------


def parse_decimal(text: str, what: str, error: ErrorFactory, maximum: int = MAX_UINT63) -> int:
    """Parse a canonical ASCII decimal in [0, maximum]."""
    if len(text) > _MAX_DECIMAL_DIGITS or _DECIMAL.fullmatch(text) is None:
        raise error(f"{what}: got {clip(text)}, want an ASCII decimal without leading zeros")
    value = int(text)
    if value > maximum:
        raise error(f"{what}: got {value}, want at most {maximum}")
    return value


def decode_hash(text: str, what: str, error: ErrorFactory) -> bytes:
    """Decode a base64 SHA-256 hash: canonical base64 of exactly 32 bytes."""
    raw = decode_base64(text, what, error)
    if len(raw) != 32:
        raise error(f"{what}: got {len(raw)} bytes, want 32")
    return raw


def decode_bounded_text(data: str | bytes, what: str, error: ErrorFactory, max_size: int) -> str:
    """UTF-8 text of at most `max_size` bytes (or, for str, characters)."""
    if isinstance(data, bytes) and len(data) > max_size:
        raise error(f"{what} size: got {len(data)} bytes, want at most {max_size}")
    data = utf8_text(data, what, error)
    if len(data) > max_size:
        raise error(f"{what} size: got {len(data)} characters, want at most {max_size}")
    return data


def split_header_and_checkpoint(text: str, what: str, error: ErrorFactory) -> tuple[list[str], str]:
    """The header lines before the first empty line, and the checkpoint note after it.

    The header block (tlog-proof, tlog-witness request) has no empty line, so the first
    one ends it; the checkpoint note that follows contains empty lines of its own.
    """
    split = text.find("\n\n")
    if split < 0:
        raise error(f"{what}: want an empty line before the checkpoint")
    return text[:split].split("\n"), text[split + 2 :]

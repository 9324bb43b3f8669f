"""Strict decoders shared by the text formats.

Every decoder takes the `FormatError` subclass to raise, so each format reports
errors in its own family, and a `what` naming the field for the message.
"""

from __future__ import annotations

import base64
import binascii
import re

from .errors import FormatError

MAX_UINT63 = (1 << 63) - 1
"""Largest tree size, index or timestamp any C2SP tlog format admits."""

# "ASCII decimal with no leading zeroes (unless the value is 0)", in every spec that
# uses it. int() alone would also take "+1", " 1", "1_0" and non-ASCII digits.
_DECIMAL = re.compile(r"0|[1-9][0-9]*")
_MAX_DECIMAL_DIGITS = 19  # len(str(MAX_UINT63))

# The standard alphabet of RFC 4648 §4, with padding.
_BASE64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")


def clip(value: str, limit: int = 40) -> str:
    """repr() of `value`, shortened for error messages."""
    if len(value) <= limit:
        return repr(value)
    return repr(value[:limit]) + f"...({len(value)} characters)"


def parse_decimal(text: str, what: str, error: type[FormatError], maximum: int = MAX_UINT63) -> int:
    """Parse a canonical ASCII decimal in [0, maximum]."""
    if len(text) > _MAX_DECIMAL_DIGITS or _DECIMAL.fullmatch(text) is None:
        raise error(f"{what}: got {clip(text)}, want an ASCII decimal without leading zeros")
    value = int(text)
    if value > maximum:
        raise error(f"{what}: got {value}, want at most {maximum}")
    return value


def decode_base64(text: str, what: str, error: type[FormatError]) -> bytes:
    """Decode standard padded base64 (RFC 4648 §4), requiring the canonical encoding.

    The re-encoding check rejects non-zero pad bits, the one way two strings that
    `b64decode(validate=True)` accepts can decode to the same bytes.
    """
    if _BASE64.fullmatch(text) is None:
        raise error(f"{what}: got {clip(text)}, want standard base64")
    try:
        raw = base64.b64decode(text, validate=True)
    except binascii.Error as exc:
        raise error(f"{what}: got {clip(text)}, invalid base64 ({exc})") from None
    canonical = base64.b64encode(raw).decode("ascii")
    if canonical != text:
        raise error(f"{what}: got {clip(text)}, want canonical base64 {clip(canonical)}")
    return raw


def decode_hash(text: str, what: str, error: type[FormatError]) -> bytes:
    """Decode a base64 SHA-256 hash: canonical base64 of exactly 32 bytes."""
    raw = decode_base64(text, what, error)
    if len(raw) != 32:
        raise error(f"{what}: got {len(raw)} bytes, want 32")
    return raw


def encode_base64(raw: bytes) -> str:
    """Standard padded base64 (RFC 4648 §4) as str."""
    return base64.b64encode(raw).decode("ascii")


def decode_bounded_text(data: str | bytes, what: str, error: type[FormatError], max_size: int) -> str:
    """UTF-8 text of at most `max_size` bytes (or, for str, characters)."""
    if isinstance(data, bytes):
        if len(data) > max_size:
            raise error(f"{what} size: got {len(data)} bytes, want at most {max_size}")
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise error(f"{what}: invalid UTF-8 at byte {exc.start}") from None
    if len(data) > max_size:
        raise error(f"{what} size: got {len(data)} characters, want at most {max_size}")
    return data


def split_header_and_checkpoint(text: str, what: str, error: type[FormatError]) -> tuple[list[str], str]:
    """The header lines before the first empty line, and the checkpoint note after it.

    The header block (tlog-proof, tlog-witness request) has no empty line, so the first
    one ends it; the checkpoint note that follows contains empty lines of its own.
    """
    split = text.find("\n\n")
    if split < 0:
        raise error(f"{what}: want an empty line before the checkpoint")
    return text[:split].split("\n"), text[split + 2 :]

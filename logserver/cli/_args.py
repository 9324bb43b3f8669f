"""argparse types for flag values, so that a bad value is a usage error (exit 2) that
names the flag, before any work starts."""
from __future__ import annotations

import argparse
from collections.abc import Callable
from datetime import datetime
from urllib.parse import urlsplit

from ..config import ConfigError, parse_listen


def log_url(value: str) -> str:
    """An http(s) base URL with a host and no query or fragment, e.g. http://127.0.0.1:8080
    or http://127.0.0.1:9000/bucket/prefix."""
    parts = urlsplit(value)
    if "://" not in value:
        raise argparse.ArgumentTypeError(
            f"want a URL with its scheme, such as http://{value or '127.0.0.1:8080'}, got {value!r}, "
            "which has no scheme (http:// or https://)")
    if parts.scheme not in ("http", "https"):
        raise argparse.ArgumentTypeError(f"want an http:// or https:// URL, got scheme {parts.scheme!r} in {value!r}")
    if not parts.hostname:
        raise argparse.ArgumentTypeError(f"want a URL with a host, such as http://127.0.0.1:8080, got {value!r}")
    if parts.query or parts.fragment or value.endswith(("?", "#")):
        # Paths are appended to it (an S3 bucket URL keeps its /bucket/prefix path).
        raise argparse.ArgumentTypeError(f"want a base URL without a query or fragment, got {value!r}")
    return value


def listen_address(value: str) -> str:
    """HOST:PORT, checked as the config checks `listen`."""
    try:
        parse_listen(value, "")
    except ConfigError as e:
        raise argparse.ArgumentTypeError(str(e).removeprefix(": ")) from None
    return value


def int_range(lo: int, hi: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            n = int(text)
        except ValueError:
            n = None
        if n is None or str(n) != text.strip() or not lo <= n <= hi:
            raise argparse.ArgumentTypeError(f"want an integer from {lo} to {hi}, got {text!r}")
        return n

    parse.__name__ = "integer"
    return parse


def seconds(text: str) -> float:
    """A duration in seconds: a finite number >= 0, e.g. 30 or 0.5."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"want a number of seconds >= 0, e.g. 30, got {text!r}")
    return value


def timestamp(text: str) -> datetime:
    """An RFC 3339 UTC time, YYYY-MM-DDTHH:MM:SS[.ffffff]Z (the payload's syntax)."""
    from ..bundle import BundleError, parse_timestamp

    try:
        return parse_timestamp("--now", text)
    except BundleError as e:
        raise argparse.ArgumentTypeError(str(e).removeprefix("--now: ")) from None

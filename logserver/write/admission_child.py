"""An admission process: `python -m logserver.write.admission_child`.

Started by the server (logserver/write/admission.py). It reads the pinned authority
keys, says it is ready (one byte), then reads request frames from stdin, runs
`bundle.admit` on every body and answers each body on stdout as soon as it is
checked (logserver/write/admission_wire.py), until stdin closes.
"""
from __future__ import annotations

import datetime as dt
import signal
import sys
from collections.abc import Iterator

from ..bundle import Admitted, AuthoritySet, admit
from .admission_wire import READY, decode_keys, decode_request, encode_answer


def answers(frame: bytes, authorities: AuthoritySet) -> Iterator[bytes]:
    """One answer frame per body of the request `frame`, in order, each as soon as
    that body is checked (so the first of a frame need not wait for the last)."""
    now_ms, bodies = decode_request(frame)
    now = dt.datetime.fromtimestamp(now_ms / 1000, dt.UTC)
    for body in bodies:
        result: Admitted | BaseException
        try:
            result = admit(body, authorities, now)
        except Exception as e:  # BundleError: a refusal; anything else: a bug, reported as such
            result = e
        yield encode_answer([result])


def main() -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the server decides when to stop (it closes stdin)
    inp, out = sys.stdin.buffer, sys.stdout.buffer

    def read(n: int) -> bytes:
        data = inp.read(n)
        if len(data) != n:
            raise EOFError
        return data

    try:
        authorities = decode_keys(read)
        out.write(READY)  # the server gives this process work only after this
        out.flush()
        while True:
            head = inp.read(4)
            if not head:
                return 0
            for reply in answers(read(int.from_bytes(head, "big")), authorities):
                out.write(reply)
                out.flush()
    except (EOFError, BrokenPipeError):
        return 0


if __name__ == "__main__":
    sys.exit(main())

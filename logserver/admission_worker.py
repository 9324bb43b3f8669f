"""An admission process: `python -m logserver.admission_worker`.

Started by the server (logserver/admission.py). It reads the pinned authority
keys, says it is ready (one byte), then reads request frames from stdin, runs
`bundle.admit` on every body and answers each frame on stdout
(logserver/admission_wire.py), until stdin closes.
"""
from __future__ import annotations

import datetime as dt
import signal
import sys

from .admission_wire import READY, decode_keys, decode_request, encode_answer
from .bundle import admit


def answer(frame: bytes, authorities) -> bytes:
    now_ms, bodies = decode_request(frame)
    now = dt.datetime.fromtimestamp(now_ms / 1000, dt.timezone.utc)
    results = []
    for body in bodies:
        try:
            results.append(admit(body, authorities, now))
        except Exception as e:  # BundleError: a refusal; anything else: a bug, reported as such
            results.append(e)
    return encode_answer(results)


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
            out.write(answer(read(int.from_bytes(head, "big")), authorities))
            out.flush()
    except (EOFError, BrokenPipeError):
        return 0


if __name__ == "__main__":
    sys.exit(main())

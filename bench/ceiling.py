"""The ceilings the server is compared with, as a minimal aiohttp app.

    python -m bench.ceiling --port P [--workers N] SIGNER_PEM COUNTERSIGNER_PEM

* `POST /v1/bundles`: read the body, parse the JSON, base64-decode payload and
  signatures, build the DSSE PAE and verify the two signatures with the pinned
  keys (loaded once). No strict schema, no database: the least work any correct
  server must do per submission. Answers 201 with a tiny JSON body.
* `GET /hello`: a hello-world GET, the ceiling for the read routes.
* `GET /bytes/{n}`: n bytes (1 to 1 MiB, made once per n): a minimal handler
  answering a body as large as a proof's or a tile's, to tell what the size of a
  response costs aiohttp and the kernel apart from what the route does.
* `GET /readyz`: 200 when up.
Run with the same aiohttp settings as `logserver serve` (no access log).
"""
from __future__ import annotations

import argparse
import base64
import json
import os
import signal
from pathlib import Path

from aiohttp import web
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, mldsa

from logserver.bundle import keyid_for, pae

_ECDSA = ec.ECDSA(hashes.SHA256())


def make_app(public_pems: list[bytes]) -> web.Application:
    keys = {}
    for pem in public_pems:
        key = serialization.load_pem_public_key(pem)
        keys[keyid_for(key)] = key

    async def post_bundle(request: web.Request) -> web.Response:
        obj = json.loads(await request.read())
        message = pae(obj["payloadType"], base64.b64decode(obj["payload"], validate=True))
        verified = 0
        for s in obj["signatures"]:
            key = keys.get(s["keyid"])
            if key is None:
                continue
            sig = base64.b64decode(s["sig"], validate=True)
            try:
                if isinstance(key, (ed25519.Ed25519PublicKey, mldsa.MLDSA44PublicKey)):
                    key.verify(sig, message)  # ML-DSA-44: pure, empty context, as the log verifies it
                elif isinstance(key, ec.EllipticCurvePublicKey):
                    key.verify(sig, message, _ECDSA)
                else:
                    return web.json_response({"error": f"unsupported key {type(key).__name__}"}, status=422)
            except InvalidSignature:
                return web.json_response({"error": "bad signature"}, status=422)
            verified += 1
        if verified != 2:
            return web.json_response({"error": f"{verified} signatures verified, want 2"}, status=422)
        return web.json_response({"verified": verified}, status=201)

    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="hello")

    bodies: dict[int, bytes] = {}

    async def some_bytes(request: web.Request) -> web.Response:
        n = int(request.match_info["n"])
        if not 0 < n <= 1 << 20:
            raise web.HTTPBadRequest(text=f"n: got {n}, want 1 to {1 << 20}")
        body = bodies.get(n)
        if body is None:
            body = bodies[n] = b"x" * n
        return web.Response(body=body, headers={"Content-Type": "application/octet-stream"})

    app = web.Application(client_max_size=64 * 1024)  # an ML-DSA-44 pair's bundle is ~9 KB
    app.router.add_post("/v1/bundles", post_bundle)
    app.router.add_get("/hello", hello)
    app.router.add_get("/bytes/{n:[1-9][0-9]{0,6}}", some_bytes)
    app.router.add_get("/readyz", hello)
    return app


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--workers", type=int, default=1, help="processes sharing the port (SO_REUSEPORT)")
    p.add_argument("pems", nargs=2)
    args = p.parse_args()
    pems = [Path(path).read_bytes() for path in args.pems]
    children = []
    for _ in range(args.workers - 1):
        pid = os.fork()
        if pid == 0:
            children = []  # a child stops only itself
            break
        children.append(pid)
    try:
        web.run_app(make_app(pems), host="127.0.0.1", port=args.port, access_log=None, print=None,
                    keepalive_timeout=75, reuse_port=args.workers > 1)
    finally:
        for pid in children:
            try:
                os.kill(pid, signal.SIGTERM)
                os.waitpid(pid, 0)
            except OSError:
                pass


if __name__ == "__main__":
    main()

"""Security basics: bounded headers, no history rewrite through the API, no key material
in logs or errors, private key files that others can read are refused.

The server is a real `logserver serve` process, with the HTTP limits cli/serve.py sets
(at most 64 headers, request line and header fields up to 8190 bytes).
"""
from __future__ import annotations

import asyncio
import base64
import json
import os
import time

import pytest
from aiohttp import ClientSession
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from bundle_factory import BundleFactory
from logserver.keys.log_key import generate_log_key_pem
from server_harness import ServerProcess, run_server_to_exit, write_config

pytestmark = pytest.mark.fault

JSON = {"Content-Type": "application/json"}


@pytest.fixture(scope="module")
async def server(database_url, tmp_path_factory):
    cfg = write_config(tmp_path_factory.mktemp("security"), database_url)
    proc = ServerProcess(cfg, database_url)
    await proc.start()
    async with ClientSession() as s:
        factory = BundleFactory(fleet_id="security")
        for _ in range(3):
            async with s.post(proc.url + "/v1/bundles", data=factory.envelope_json(), headers=JSON) as r:
                assert r.status == 201
    yield proc
    await proc.stop()
    proc.kill_now()


async def raw_status(server: ServerProcess, request: bytes) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write(request)
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), 30)
        assert line.startswith((b"HTTP/1.1 ", b"HTTP/1.0 ")), line
        return int(line.split()[1])
    finally:
        writer.close()


# --- header counts and sizes -------------------------------------------------------------------


@pytest.mark.parametrize("case", ["too many headers", "header value too long", "header name too long",
                                  "request line too long"])
async def test_oversized_request_heads_get_4xx_not_5xx(server, case):
    if case == "too many headers":
        extra = "".join(f"X-H{i}: v\r\n" for i in range(100))
        request = f"GET /v1/log HTTP/1.1\r\nHost: t\r\n{extra}\r\n"
    elif case == "header value too long":
        request = f"GET /v1/log HTTP/1.1\r\nHost: t\r\nX-Big: {'a' * 9000}\r\n\r\n"
    elif case == "header name too long":
        request = f"GET /v1/log HTTP/1.1\r\nHost: t\r\nX-{'a' * 9000}: v\r\n\r\n"
    else:
        request = f"GET /v1/log?{'a' * 9000}=1 HTTP/1.1\r\nHost: t\r\n\r\n"
    status = await raw_status(server, request.encode())
    assert 400 <= status < 500, (case, status)
    # Just under the limits is fine.
    ok = "".join(f"X-H{i}: v\r\n" for i in range(40))
    assert await raw_status(server, f"GET /v1/log HTTP/1.1\r\nHost: t\r\n{ok}\r\n".encode()) == 200


# --- nothing rewrites history through the API ----------------------------------------------------


async def test_no_route_accepts_put_delete_or_patch(server):
    async with ClientSession() as s:
        async with s.get(server.url + "/v1/log") as r:
            before = await r.json()
        async with s.get(server.url + "/v1/entries?start=0&end=3") as r:
            entries = (await r.json())["entries"]
        lh = entries[0]["leaf_hash"]
        paths = ["/v1/bundles", f"/v1/bundles/{lh}", "/v1/log", "/v1/proof/inclusion?tree_size=3&index=0",
                 "/v1/proof/consistency?first=1&second=3", "/v1/entries?start=0&end=3", "/v1/fleets/security",
                 "/checkpoint", "/tile/0/000.p/3", "/tile/entries/000.p/3", "/metrics", "/healthz", "/readyz",
                 "/openapi.yaml"]
        body = BundleFactory(fleet_id="security-rewrite").envelope_json()
        for path in paths:
            for method in ("PUT", "DELETE", "PATCH"):
                async with s.request(method, server.url + path, data=body, headers=JSON) as r:
                    assert r.status == 405, (method, path, r.status)
                    assert (await r.json())["error"]["code"] == "method_not_allowed"
                    assert "Allow" in r.headers and method not in r.headers["Allow"], (method, path)
        async with s.get(server.url + "/v1/log") as r:
            after = await r.json()
        async with s.get(server.url + "/v1/entries?start=0&end=3") as r:
            assert (await r.json())["entries"] == entries
        assert after["tree_size"] == before["tree_size"]
        # The routes the server has are exactly the documented read routes and one POST.
    from pathlib import Path

    import yaml

    spec = yaml.safe_load((Path(__file__).resolve().parents[1] / "openapi.yaml").read_text())
    methods = {m for item in spec["paths"].values() for m in item if m in ("get", "put", "post", "delete", "patch")}
    assert methods == {"get", "post"}
    assert [p for p, item in spec["paths"].items() if "post" in item] == ["/v1/bundles"]


# --- key material ------------------------------------------------------------------------------


def pem_body_lines(pem: bytes) -> list[str]:
    """The base64 lines of a PEM: the key material itself."""
    return [line for line in pem.decode().splitlines() if line and not line.startswith("-----")]


def raw_key_fragments(pem: bytes) -> list[str]:
    """Renderings of the DER's secret part an error message might leak: hex and base64."""
    der = base64.b64decode("".join(pem_body_lines(pem)))
    secret = der[-32:]
    return [secret.hex(), base64.b64encode(secret).decode()[:40], repr(secret)[2:40]]


def ecdsa_pem() -> bytes:
    return ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def corrupted(pem: bytes) -> bytes:
    lines = pem.decode().splitlines()
    body = lines[1]
    lines[1] = body[:10] + ("A" if body[10] != "A" else "B") + body[11:] + "!!"  # no longer valid base64
    return ("\n".join(lines) + "\n").encode()


@pytest.mark.parametrize("case", ["corrupted PEM", "wrong key type", "truncated", "key as raw bytes"])
async def test_a_bad_log_key_is_refused_without_printing_it(case, database_url, tmp_path):
    good = generate_log_key_pem()
    bad = {
        "corrupted PEM": lambda: corrupted(good),
        "wrong key type": ecdsa_pem,
        "truncated": lambda: good[: len(good) // 2 + 30],
        "key as raw bytes": lambda: base64.b64decode("".join(pem_body_lines(good)))[-32:] * 2,
    }[case]()
    cfg = write_config(tmp_path, database_url, key_pem=bad)
    status, out = await run_server_to_exit(cfg, database_url)
    assert status != 0, out
    assert "log_key" in out, out  # the error names the setting ...
    secret_lines = pem_body_lines(bad) if bad.startswith(b"-----") else []
    for line in secret_lines:
        assert line not in out, f"{case}: a line of the key file was printed:\n{out}"
    for source in [good] + ([bad] if case == "wrong key type" else []):
        for fragment in raw_key_fragments(source):
            assert fragment not in out, f"{case}: key bytes were printed:\n{out}"
    assert "Traceback" not in out, out


async def test_normal_run_logs_no_key_material(server):
    key_pem = (server.config_path.parent / "log.key").read_bytes()
    async with ClientSession() as s:
        async with s.get(server.url + "/v1/log") as r:
            info = await r.json()
        async with s.post(server.url + "/v1/bundles", data=b"{not json", headers=JSON) as r:
            error = await r.text()
    output = server.output()
    assert "listening on" in output  # the log is the one of this server
    for line in pem_body_lines(key_pem):
        assert line not in output and line not in json.dumps(info) and line not in error
    for fragment in raw_key_fragments(key_pem):
        assert fragment not in output and fragment not in json.dumps(info) and fragment not in error
    assert "PRIVATE KEY" not in output


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660, 0o644, 0o700 | 0o004])
async def test_a_log_key_others_can_read_is_refused(mode, database_url, tmp_path):
    cfg = write_config(tmp_path, database_url)
    (tmp_path / "log.key").chmod(mode)
    status, out = await run_server_to_exit(cfg, database_url)
    assert status == 1, out
    assert "accessible by group or others" in out and f"{mode:04o}" in out and "chmod 600" in out, out
    for line in pem_body_lines((tmp_path / "log.key").read_bytes()):
        assert line not in out


# --- timeouts on the request head ---------------------------------------------------------------

HEADER_TIMEOUT_S = 10  # limits.header_timeout_s default (http/serving.py)


@pytest.mark.skipif(os.environ.get("LOGSERVER_LONG_FAULTS") != "1", reason="long variant: LOGSERVER_LONG_FAULTS=1")
async def test_a_request_head_trickled_forever_is_cut_at_the_header_timeout(server):
    """With the default limits; tests/test_fault_hostile_clients.py runs the short variant."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    started = time.monotonic()
    try:
        writer.write(b"GET /v1/log HTTP/1.1\r\nX-Slow: ")
        while not reader.at_eof() and time.monotonic() - started < HEADER_TIMEOUT_S + 30:
            writer.write(b"a")
            await writer.drain()
            await asyncio.sleep(1)
    except ConnectionError:
        pass
    finally:
        writer.close()
    assert time.monotonic() - started < HEADER_TIMEOUT_S + 30


def test_made_up_methods_do_not_grow_the_metric_label_set():
    """Any token is a valid HTTP method (aiohttp's C parser refuses most, its pure-Python
    one does not); the latency histogram's label set must stay bounded either way."""
    from prometheus_client import generate_latest

    from logserver.api.metrics import Metrics

    m = Metrics()
    for i in range(20):
        m.observe_http("/v1/log", f"MADEUP{i}", 405, 0.001)
    m.observe_http("/v1/log", "GET", 200, 0.001)
    text = generate_latest(m.registry).decode()
    assert "MADEUP" not in text
    assert text.count('method="other"') and text.count('method="GET"')

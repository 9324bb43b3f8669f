"""Static publication to S3 (a real SeaweedFS) and reading a directory target through a
real nginx (issue 19, section 2): the objects, read anonymously through the bucket's
public URL and through nginx, are byte-identical to the server's tlog-tiles routes and
carry the documented headers; a bucket that does not exist stops start-up."""
from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys

import aiohttp
import pytest

from logserver.config import load_config
from logserver.formats.checkpoint import parse_checkpoint
from logserver.formats.note import parse_note
from logserver.keys.log_key import LogKey
from logserver.publish.build import check_targets
from logserver.publish.targets import TargetError
from publish_support import envelopes, submit, tree_paths, wait_for
from server_harness import ORIGIN, start_server, write_config
from static_servers import start_nginx, start_seaweedfs
from test_client_support import write_trust_policy

BUCKET = "published-log"
PREFIX = "logs/one"


def targets(endpoint: str, bucket: str = BUCKET) -> str:
    return f"""
[[publication.targets]]
name = "bucket"
type = "s3"
bucket = "{bucket}"
endpoint_url = "{endpoint}"
prefix = "{PREFIX}"

[[publication.targets]]
name = "dir"
type = "directory"
path = "public"
"""


@pytest.fixture(scope="module")
def s3_credentials():
    """SeaweedFS runs without identities: any key signs. Set for the in-process server."""
    saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    os.environ.update(AWS_ACCESS_KEY_ID="any", AWS_SECRET_ACCESS_KEY="any")
    yield
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="module")
def weed(tmp_path_factory):
    server = start_seaweedfs(tmp_path_factory.mktemp("weed"))
    try:
        server.create_bucket(BUCKET)
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
async def published(database_url, tmp_path_factory, weed, s3_credentials):
    directory = tmp_path_factory.mktemp("publish-s3")
    server = await start_server(write_config(directory, database_url, extra=targets(weed.endpoint_url)))
    nginx = start_nginx(directory / "public", tmp_path_factory.mktemp("nginx"))
    try:
        yield server, weed.public_url(BUCKET, PREFIX), nginx.url
    finally:
        nginx.stop()
        await server.close()


async def fetch(session: aiohttp.ClientSession, url: str) -> tuple[int, bytes, dict[str, str]]:
    async with session.get(url, headers={"Accept-Encoding": "identity"}) as resp:
        return resp.status, await resp.read(), dict(resp.headers)


def want_headers(path: str) -> tuple[str, str]:
    """(Content-Type, Cache-Control) that docs/deployment.md documents for `path`."""
    if path == "checkpoint":
        return "text/plain; charset=utf-8", "public, max-age=1"
    if ".p/" in path:
        return "application/octet-stream", "public, max-age=60"
    return "application/octet-stream", "public, max-age=31536000, immutable"


async def test_bucket_and_nginx_serve_the_routes_bytes_with_their_headers(published):
    server, bucket_url, nginx_url = published
    for chunk in range(3):
        await submit(server.session, server.url, envelopes(110, f"s3-fleet-{chunk}"))
    async with aiohttp.ClientSession() as session:
        async def caught_up() -> bool:
            served = (await fetch(session, server.url + "/checkpoint"))[1]
            return [(await fetch(session, base + "/checkpoint"))[1] for base in (bucket_url, nginx_url)] == [served] * 2

        await wait_for("the bucket and the directory to hold the served checkpoint", caught_up)
        status, checkpoint, _ = await fetch(session, server.url + "/checkpoint")
        size = parse_checkpoint(parse_note(checkpoint).text).size
        assert size >= 330
        for path in ["checkpoint", *tree_paths(size)]:
            _, want, _ = await fetch(session, f"{server.url}/{path}")
            content_type, cache_control = want_headers(path)
            for base in (bucket_url, nginx_url):
                status, got, headers = await fetch(session, f"{base}/{path}")
                assert status == 200, f"{base}/{path}: {status}"
                assert got == want, f"{base}/{path}: other bytes than the server's route"
                assert headers.get("Content-Type") == content_type, f"{base}/{path}: {headers}"
                assert headers.get("Cache-Control") == cache_control, f"{base}/{path}: {headers}"


async def test_a_bucket_that_does_not_exist_stops_start_up(tmp_path, weed, s3_credentials):
    config = load_config(write_config(tmp_path, "postgresql://unused@127.0.0.1/x",
                                      extra=targets(weed.endpoint_url, bucket="no-such-bucket")))
    with pytest.raises(TargetError, match=r"bucket .no-such-bucket. does not exist; create it first"):
        await check_targets(config.publication.targets)


async def test_clients_verify_a_receipt_through_the_bucket_and_nginx(published, tmp_path):
    server, bucket_url, nginx_url = published
    body = envelopes(1, "s3-verified")[0]
    (receipt,) = await submit(server.session, server.url, [body])
    (tmp_path / "bundle.json").write_bytes(body)
    (tmp_path / "receipt.json").write_text(json.dumps(receipt))
    key = LogKey.load(server.config.log_key, ORIGIN)
    policy = write_trust_policy(tmp_path / "client", key.vkey)
    for base in (bucket_url, nginx_url):
        # --wait: the static tree may lag the receipt by a pass; verify waits for it.
        done = await asyncio.to_thread(subprocess.run, [
            sys.executable, "-m", "logserver.cli", "verify", "--receipt", str(tmp_path / "receipt.json"),
            "--envelope", str(tmp_path / "bundle.json"), "--policy", str(policy), "--tiles", base,
            "--wait", "30"], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "[  ok] inclusion_proof" in done.stdout, done.stdout


async def test_a_replaced_object_in_the_bucket_is_named_by_fsck_and_the_monitor(published, weed, tmp_path):
    """Last in the module: it leaves the bucket corrupted."""
    import aiobotocore.session

    server, bucket_url, _ = published
    async with aiohttp.ClientSession() as session:
        _, checkpoint, _ = await fetch(session, bucket_url + "/checkpoint")
    size = parse_checkpoint(parse_note(checkpoint).text).size
    assert size >= 256
    key = f"{PREFIX}/tile/entries/000"
    async with aiobotocore.session.get_session().create_client("s3", **weed.client_kwargs()) as s3:
        original = await (await s3.get_object(Bucket=BUCKET, Key=key))["Body"].read()
        await s3.put_object(Bucket=BUCKET, Key=key, Body=original[:-1] + bytes([original[-1] ^ 1]))
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    fsck = await asyncio.to_thread(subprocess.run, [
        sys.executable, "-m", "logserver.cli", "fsck", "--config", str(server.config.log_key.parent / "logserver.toml"),
        "--target", "bucket", "--quiet"], capture_output=True, text=True, timeout=120, env=env)
    assert fsck.returncode == 1, fsck.stdout + fsck.stderr
    assert "tile/entries/000" in fsck.stdout + fsck.stderr, fsck.stdout + fsck.stderr
    policy = write_trust_policy(tmp_path / "client", LogKey.load(server.config.log_key, ORIGIN).vkey)
    monitor = await asyncio.to_thread(subprocess.run, [
        sys.executable, "-m", "logserver.cli", "monitor", "--tiles", bucket_url, "--policy", str(policy),
        "--state", str(tmp_path / "monitor"), "--once"], capture_output=True, text=True, timeout=120)
    assert monitor.returncode != 0, monitor.stdout + monitor.stderr
    assert f"{bucket_url}/tile/entries/000" in monitor.stdout, monitor.stdout

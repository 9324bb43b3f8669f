"""The real servers of static publication (issue 19), as the publisher's tests use them:
nginx running the shipped deploy/nginx/logserver.conf over a published tlog-tiles
directory, and SeaweedFS's S3 API (conditional puts, anonymous reads of the stored
headers, data kept across a stop and a start). Both run here; neither skips."""
from __future__ import annotations

import gzip
import uuid
from pathlib import Path

import aiohttp
import pytest
from aiobotocore.session import get_session
from botocore.exceptions import ClientError

import static_servers

# C2SP tlog-tiles: the types of the three kinds of object, and this project's caching
# headers for them (docs/deployment.md, "Serving the published directory with nginx").
CHECKPOINT_TYPE = "text/plain; charset=utf-8"
TILE_TYPE = "application/octet-stream"
IMMUTABLE = "public, max-age=31536000, immutable"
PARTIAL = "public, max-age=60"
CHECKPOINT_CACHE = "public, max-age=1"
FLEET_HEAD_TYPE = "application/json"
FLEET_HEAD_CACHE = "public, max-age=5"

CHECKPOINT = (b"test.logserver.example/log\n1234067\nBdIZEYfGx9c4kcyHQ5D34Fd4S9kvyLqhbEV4P2ReyJk=\n\n"
              b"\xe2\x80\x94 test.logserver.example/log "
              b"Az3grnSom0Ld7yVmYkvBvXpFmrZlZ3k+k8WfI8kGVmzHVTYqLMVJXAhCRx2Ox0JD\n")


def entry_bundle(count: int) -> bytes:
    """`count` entries, each a big-endian uint16 length and its bytes (tlog-tiles "Log
    entries"); repetitive, so that gzip visibly shrinks it."""
    entries = [b"entry %06d " % i * 8 for i in range(count)]
    return b"".join(len(e).to_bytes(2, "big") + e for e in entries)


# path -> bytes: one object of each kind, at the paths tlog-tiles gives them.
OBJECTS = {
    "checkpoint": CHECKPOINT,
    "tile/0/x001/x234/067": bytes(range(256)) * 32,  # full: 256 hashes, 8,192 bytes
    "tile/0/x001/x234/068.p/37": bytes(37 * 32),  # partial, width 37
    "tile/1/000": b"\x11" * 8192,
    "tile/entries/x001/x234/067": entry_bundle(256),
    "tile/entries/x001/x234/068.p/37": entry_bundle(37),
    # Fleet-head proofs (docs/fleet-heads.md, "Static publication"): any fleet id, one
    # starting with a dot included.
    "fleet-head/fleet-a": b'{"version":1,"fleet_id":"fleet-a"}',
    "fleet-head/.dot:fleet_9-x": b'{"version":1,"fleet_id":".dot:fleet_9-x"}',
}
# path -> (Content-Type, Cache-Control) of each object kind.
EXPECTED = {
    "/checkpoint": (CHECKPOINT_TYPE, CHECKPOINT_CACHE),
    "/tile/0/x001/x234/067": (TILE_TYPE, IMMUTABLE),
    "/tile/0/x001/x234/068.p/37": (TILE_TYPE, PARTIAL),
    "/tile/1/000": (TILE_TYPE, IMMUTABLE),
    "/tile/entries/x001/x234/067": (TILE_TYPE, IMMUTABLE),
    "/tile/entries/x001/x234/068.p/37": (TILE_TYPE, PARTIAL),
    "/fleet-head/fleet-a": (FLEET_HEAD_TYPE, FLEET_HEAD_CACHE),
    "/fleet-head/.dot:fleet_9-x": (FLEET_HEAD_TYPE, FLEET_HEAD_CACHE),
}
BUNDLES = ["/tile/entries/x001/x234/067", "/tile/entries/x001/x234/068.p/37"]
SECRET = b"half-written: must never be served"
# Files on disk that are no object of the log, each of which nginx must answer 404: the
# publisher's temporary files, other dotfiles, and names outside tlog-tiles' grammar.
NOT_SERVED = {
    ".tmp-checkpoint-1a2b": SECRET,
    "tile/0/x001/x234/.tmp-069-3c4d": SECRET,
    "tile/entries/x001/x234/068.p/.tmp-38-5e6f": SECRET,
    ".checkpoint.lock": SECRET,  # the directory publishers' flock
    ".hidden/checkpoint": SECRET,
    "tile/64/000": SECRET,  # level above 63
    "tile/01/000": SECRET,  # a level with a leading zero
    "tile/0/x001/x234/068.p/037": SECRET,  # a width with a leading zero
    "tile/0/x001/x234/068.p/256": SECRET,  # a width above 255
    "tile/0/1234": SECRET,  # not 3-digit elements
    "tile/0/001/002": SECRET,  # an element before the last without its `x`
    "tile/entries/000.gz": SECRET,
    "index.html": SECRET,
    ".staging/.tmp-0123456789abcdef": SECRET,  # a fleet-head proof being written
    "fleet-head/sub/fleet-a": SECRET,  # not a fleet id: no subdirectories
    "fleet-head/" + "a" * 129: SECRET,  # longer than a fleet id
    "logserver.toml": SECRET,
}


def publish(root: Path, objects: dict[str, bytes]) -> None:
    for name, data in objects.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


@pytest.fixture
def published(tmp_path) -> Path:
    """A published directory: every object kind, and files that must not be served."""
    root = tmp_path / "public"
    publish(root, OBJECTS | NOT_SERVED)
    # A directory named like a full tile: a directory is never served, nor redirected.
    (root / "tile/0/x001/x234/070").mkdir()
    return root


@pytest.fixture
async def http():
    # No automatic Accept-Encoding, no decompression: each test says what it asks for and
    # sees the bytes as sent.
    async with aiohttp.ClientSession(auto_decompress=False, skip_auto_headers=["Accept-Encoding"]) as session:
        yield session


# --- nginx -----------------------------------------------------------------------------------

@pytest.mark.parametrize("path", sorted(EXPECTED))
async def test_nginx_serves_each_object_kind_with_its_type_and_caching(nginx_for, published, http, path):
    nginx = nginx_for(published)
    content_type, cache_control = EXPECTED[path]
    async with http.get(nginx.url + path) as resp:
        body = await resp.read()
        assert resp.status == 200
        assert resp.headers["Content-Type"] == content_type
        assert resp.headers.getall("Cache-Control") == [cache_control]
        assert "Content-Encoding" not in resp.headers  # not asked for
        assert resp.headers["ETag"] and resp.headers["Last-Modified"]
        assert "nginx/" not in resp.headers.get("Server", "")  # server_tokens off
    assert body == OBJECTS[path.lstrip("/")]


@pytest.mark.parametrize("path", BUNDLES)
async def test_nginx_gzips_entry_bundles_when_asked(nginx_for, published, http, path):
    nginx = nginx_for(published)
    async with http.get(nginx.url + path, headers={"Accept-Encoding": "gzip"}) as resp:
        body = await resp.read()
        assert resp.status == 200
        assert resp.headers["Content-Encoding"] == "gzip"
        assert resp.headers["Vary"] == "Accept-Encoding"
        assert resp.headers["Content-Type"] == TILE_TYPE
        assert resp.headers.getall("Cache-Control") == [EXPECTED[path][1]]
    assert gzip.decompress(body) == OBJECTS[path.lstrip("/")]
    assert len(body) < len(OBJECTS[path.lstrip("/")])

    # Without gzip in Accept-Encoding: the bytes as stored, and the same Vary.
    for headers in ({}, {"Accept-Encoding": "identity"}):
        async with http.get(nginx.url + path, headers=headers) as resp:
            assert resp.status == 200
            assert "Content-Encoding" not in resp.headers
            assert resp.headers["Vary"] == "Accept-Encoding"
            assert await resp.read() == OBJECTS[path.lstrip("/")]


@pytest.mark.parametrize("path", sorted(set(EXPECTED) - set(BUNDLES)))
async def test_nginx_never_compresses_tiles_or_the_checkpoint(nginx_for, published, http, path):
    # The test's http block has Debian's `gzip on;`: the server block's `gzip off` holds.
    nginx = nginx_for(published)
    async with http.get(nginx.url + path, headers={"Accept-Encoding": "gzip"}) as resp:
        assert resp.status == 200
        assert "Content-Encoding" not in resp.headers
        assert await resp.read() == OBJECTS[path.lstrip("/")]


async def test_nginx_refuses_dotfiles_and_names_outside_the_layout(nginx_for, published, http):
    nginx = nginx_for(published)
    paths = ["/" + name for name in NOT_SERVED] + [
        "/%2Etmp-checkpoint-1a2b",  # percent-encoded: matched after decoding
        "/tile/0/x001/x234/%2etmp-069-3c4d",
        "/tile/0/../.tmp-checkpoint-1a2b",
        "/checkpoint/",
        "/fleet-head/",
        "/fleet-head/../.staging/.tmp-0123456789abcdef",
        "/fleet-head/%2E%2E/.staging/.tmp-0123456789abcdef",
        "/tile/0/x001/x234/999",  # the right shape, not published
    ]
    for path in paths:
        async with http.get(nginx.url + path) as resp:
            body = await resp.read()
            assert resp.status == 404, path
            assert SECRET not in body, path
            assert "Cache-Control" not in resp.headers, path  # a 404 is not cached for a year


async def test_nginx_before_the_first_publication(nginx_for, tmp_path, http):
    # An empty directory: no checkpoint yet, a 404 that no cache keeps.
    (tmp_path / "empty").mkdir()
    nginx = nginx_for(tmp_path / "empty")
    for path in ("/checkpoint", "/tile/0/000", "/tile/entries/000"):
        async with http.get(nginx.url + path) as resp:
            assert resp.status == 404
            assert "Cache-Control" not in resp.headers


async def test_nginx_lists_no_directory_and_redirects_none(nginx_for, published, http):
    nginx = nginx_for(published)
    for path in ["/", "/tile", "/tile/", "/tile/0/", "/tile/0/x001/x234", "/tile/0/x001/x234/",
                 "/tile/0/x001/x234/068.p", "/tile/0/x001/x234/068.p/", "/tile/entries/", "/tile/0/x001/x234/070"]:
        async with http.get(nginx.url + path, allow_redirects=False) as resp:
            body = await resp.read()
            assert resp.status in (403, 404), path
            assert "Location" not in resp.headers, path
            assert b"067" not in body and b"Index of" not in body, path


async def test_nginx_revalidation_keeps_the_caching_headers(nginx_for, published, http):
    # A cache revalidating the checkpoint (after its second) or a tile gets a 304 with
    # the same Cache-Control.
    nginx = nginx_for(published)
    for path in ("/checkpoint", "/tile/0/x001/x234/067"):
        async with http.get(nginx.url + path) as resp:
            etag = resp.headers["ETag"]
        async with http.get(nginx.url + path, headers={"If-None-Match": etag}) as resp:
            assert resp.status == 304
            assert resp.headers.getall("Cache-Control") == [EXPECTED[path][1]]
            assert await resp.read() == b""


async def test_nginx_serves_a_replaced_checkpoint_at_once(nginx_for, published, http):
    # The publisher renames a new checkpoint into place; the next GET has it.
    nginx = nginx_for(published)
    async with http.get(nginx.url + "/checkpoint") as resp:
        assert await resp.read() == CHECKPOINT
    new = CHECKPOINT.replace(b"1234067", b"1234068")
    (published / ".tmp-checkpoint-new").write_bytes(new)
    (published / ".tmp-checkpoint-new").rename(published / "checkpoint")
    async with http.get(nginx.url + "/checkpoint") as resp:
        assert resp.status == 200
        assert await resp.read() == new


def test_nginx_is_stopped_by_its_pid(nginx_for, published):
    nginx = nginx_for(published)
    assert nginx.running
    assert nginx.stop() == 0
    assert not nginx.running
    assert static_servers.probe(nginx.port) == (None, b"")  # nothing answers on its port


# --- SeaweedFS ---------------------------------------------------------------------------------

def bucket_name() -> str:
    return f"t-{uuid.uuid4().hex[:16]}"


@pytest.fixture
def bucket(seaweedfs) -> str:
    """A fresh bucket of the session's SeaweedFS."""
    name = bucket_name()
    seaweedfs.create_bucket(name)
    return name


def s3(server):
    return get_session().create_client("s3", **server.client_kwargs())


def error_code(exc: ClientError) -> str:
    return exc.response["Error"]["Code"]


async def test_seaweedfs_put_if_none_match_refuses_an_existing_key(seaweedfs, bucket):
    async with s3(seaweedfs) as client:
        await client.put_object(Bucket=bucket, Key="tile/0/000", Body=b"first", IfNoneMatch="*")
        with pytest.raises(ClientError) as refused:
            await client.put_object(Bucket=bucket, Key="tile/0/000", Body=b"second", IfNoneMatch="*")
        assert error_code(refused.value) == "PreconditionFailed"
        assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412
        got = await client.get_object(Bucket=bucket, Key="tile/0/000")
        assert await got["Body"].read() == b"first"


async def test_seaweedfs_put_if_match_needs_the_current_etag(seaweedfs, bucket):
    async with s3(seaweedfs) as client:
        first = await client.put_object(Bucket=bucket, Key="checkpoint", Body=b"size 1\n")
        with pytest.raises(ClientError) as refused:
            await client.put_object(Bucket=bucket, Key="checkpoint", Body=b"size 3\n",
                                    IfMatch='"00000000000000000000000000000000"')
        assert error_code(refused.value) == "PreconditionFailed"
        got = await client.get_object(Bucket=bucket, Key="checkpoint")
        assert await got["Body"].read() == b"size 1\n"

        second = await client.put_object(Bucket=bucket, Key="checkpoint", Body=b"size 2\n", IfMatch=first["ETag"])
        assert second["ETag"] != first["ETag"]
        # The ETag it replaced is no longer current.
        with pytest.raises(ClientError) as stale:
            await client.put_object(Bucket=bucket, Key="checkpoint", Body=b"size 3\n", IfMatch=first["ETag"])
        assert error_code(stale.value) == "PreconditionFailed"
        got = await client.get_object(Bucket=bucket, Key="checkpoint")
        assert await got["Body"].read() == b"size 2\n"


async def test_seaweedfs_anonymous_get_returns_the_stored_headers(seaweedfs, bucket, http):
    objects = {
        "log/checkpoint": (CHECKPOINT, CHECKPOINT_TYPE, CHECKPOINT_CACHE),
        "log/tile/0/x001/x234/067": (OBJECTS["tile/0/x001/x234/067"], TILE_TYPE, IMMUTABLE),
        "log/tile/entries/x001/x234/068.p/37": (OBJECTS["tile/entries/x001/x234/068.p/37"], TILE_TYPE, PARTIAL),
    }
    async with s3(seaweedfs) as client:
        for key, (data, content_type, cache_control) in objects.items():
            await client.put_object(Bucket=bucket, Key=key, Body=data, ContentType=content_type,
                                    CacheControl=cache_control)
    base = seaweedfs.public_url(bucket, "log")
    assert base == f"{seaweedfs.endpoint_url}/{bucket}/log"
    for key, (data, content_type, cache_control) in objects.items():
        # No credentials, no signature: what a reader of the published log does.
        async with http.get(base + key.removeprefix("log")) as resp:
            assert resp.status == 200, key
            assert resp.headers["Content-Type"] == content_type
            assert resp.headers["Cache-Control"] == cache_control
            assert await resp.read() == data
    async with http.get(base + "/tile/0/000") as resp:
        assert resp.status == 404


async def test_seaweedfs_keeps_its_objects_across_stop_and_start(seaweedfs_private, http):
    server = seaweedfs_private
    name = bucket_name()
    server.create_bucket(name)
    async with s3(server) as client:
        for key, data in OBJECTS.items():
            await client.put_object(Bucket=name, Key=key, Body=data, CacheControl=IMMUTABLE)
    endpoint, pid = server.endpoint_url, server.pid

    await server.astop()
    assert not server.running
    with pytest.raises(aiohttp.ClientConnectionError):  # the target is down
        async with http.get(server.public_url(name) + "/checkpoint"):
            pass

    await server.astart()
    assert server.endpoint_url == endpoint and server.pid != pid
    for key, data in OBJECTS.items():
        async with http.get(server.public_url(name) + "/" + key) as resp:
            assert resp.status == 200, key
            assert resp.headers["Cache-Control"] == IMMUTABLE
            assert await resp.read() == data
    # And it takes writes again, conditional ones included.
    async with s3(server) as client:
        with pytest.raises(ClientError) as refused:
            await client.put_object(Bucket=name, Key="checkpoint", Body=b"other", IfNoneMatch="*")
        assert error_code(refused.value) == "PreconditionFailed"
        await client.put_object(Bucket=name, Key="tile/0/x001/x234/069", Body=b"new", IfNoneMatch="*")

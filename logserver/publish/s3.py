"""An S3-compatible object storage target (AWS S3, SeaweedFS, MinIO, R2, ...).

The client is aiobotocore (the `s3` extra): botocore's S3 model on aiohttp, the HTTP
stack the server already runs on, in the same event loop (docs/deployment.md says why
it was chosen). Objects are keys under `prefix` in `bucket`, with the tlog-tiles paths:

* an immutable object is a PUT with `If-None-Match: *` (created only if absent). A 412
  means it exists: it is read back and compared, and other bytes are a conflict (never
  overwritten);
* the checkpoint is a PUT with `If-Match: <ETag read>` (or `If-None-Match: *` when
  there was none), so it is replaced only if no other publisher changed it since it
  was read;
* a fleet-head proof is a plain PUT, replacing the previous one (S3 PUTs are atomic);
* each object carries its Content-Type and Cache-Control (publish/targets.py), which
  the bucket's public URL and a CDN in front of it serve.

A PUT that returned 200 is durable (S3's contract), so `sync` has nothing to do.
Credentials come from botocore's usual sources: AWS_ACCESS_KEY_ID and
AWS_SECRET_ACCESS_KEY, a shared credentials file, an instance role.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from .targets import CHECKPOINT_CACHE, CHECKPOINT_PATH, CHECKPOINT_TYPE, ObjectConflictError, StaticObject, TargetError

# Codes S3 and its look-alikes answer a failed precondition with: 412 PreconditionFailed;
# 409 ConditionalRequestConflict when a concurrent conditional write to the key won.
_PRECONDITION = {"PreconditionFailed", "412", "ConditionalRequestConflict", "409"}
_MISSING = {"NoSuchKey", "404", "NotFound"}


def _code(e: Exception) -> str:
    response: dict[str, Any] = getattr(e, "response", None) or {}
    code = str(response.get("Error", {}).get("Code", ""))
    return code or str(response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))


class S3Target:
    def __init__(self, name: str, *, endpoint_url: str | None, bucket: str, prefix: str = "",
                 region: str = "us-east-1", max_connections: int = 32):
        self.name = name
        self.endpoint_url = endpoint_url
        self.bucket = bucket
        self.prefix = prefix
        self.region = region
        self.max_connections = max_connections
        self._stack: contextlib.AsyncExitStack | None = None
        self._s3: Any = None

    def describe(self) -> str:
        where = f" at {self.endpoint_url}" if self.endpoint_url else ""
        return f"s3://{self.bucket}/{self.prefix}{where}"

    async def _client(self) -> Any:
        if self._s3 is None:
            try:
                from aiobotocore.session import get_session
                from botocore.config import Config as BotoConfig
            except ImportError:
                raise TargetError(
                    f"publication target {self.name!r} is an S3 target, which needs the s3 extra: "
                    "pip install 'logserver[s3]'") from None
            # One INFO line per client about where its credentials came from: noise in the log.
            for name in ("botocore.credentials", "aiobotocore.credentials"):
                logging.getLogger(name).setLevel(logging.WARNING)
            stack = contextlib.AsyncExitStack()
            config = BotoConfig(
                s3={"addressing_style": "path"}, connect_timeout=5, read_timeout=15,
                retries={"max_attempts": 2, "mode": "standard"}, max_pool_connections=self.max_connections,
            )
            self._s3 = await stack.enter_async_context(get_session().create_client(
                "s3", endpoint_url=self.endpoint_url, region_name=self.region, config=config))
            self._stack = stack
        return self._s3

    def _key(self, path: str) -> str:
        return self.prefix + path

    async def check(self) -> None:
        where = f"publication target {self.name!r} ({self.describe()})"
        from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

        s3 = await self._client()
        try:
            await s3.head_bucket(Bucket=self.bucket)
        except NoCredentialsError:
            raise TargetError(f"{where}: no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
                              "(or another botocore credential source)") from None
        except ClientError as e:
            code = _code(e)
            if code in _MISSING:
                raise TargetError(f"{where}: bucket {self.bucket!r} does not exist; create it first") from None
            raise TargetError(f"{where}: the bucket cannot be used: {code or e}") from None
        except (BotoCoreError, OSError) as e:
            raise TargetError(f"{where}: unreachable: {e}") from None

    async def create(self, obj: StaticObject) -> bool:
        from botocore.exceptions import ClientError

        s3 = await self._client()
        try:
            await s3.put_object(Bucket=self.bucket, Key=self._key(obj.path), Body=obj.data, IfNoneMatch="*",
                                ContentType=obj.content_type, CacheControl=obj.cache_control)
            return True
        except ClientError as e:
            if _code(e) not in _PRECONDITION:
                raise
        existing = await self.read(obj.path)
        if existing is None:  # a 409 lost to a write that then vanished: not done, retry the pass
            raise RuntimeError(f"target {self.name!r}: conditional create of {obj.path} conflicted, "
                               "and the object is absent")
        if existing != obj.data:
            raise ObjectConflictError(
                self.name, obj.path, f"exists with other bytes ({len(existing)} bytes, want {len(obj.data)}); "
                "it is never overwritten: find out who changed it (logserver fsck --target)")
        return False

    async def put_many(self, objs: list[StaticObject]) -> None:
        s3 = await self._client()
        sem = asyncio.Semaphore(self.max_connections)

        async def one(obj: StaticObject) -> None:
            async with sem:
                await s3.put_object(Bucket=self.bucket, Key=self._key(obj.path), Body=obj.data,
                                    ContentType=obj.content_type, CacheControl=obj.cache_control)

        tasks = [asyncio.create_task(one(o)) for o in objs]
        try:
            await asyncio.gather(*tasks)
        except BaseException:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise

    async def sync(self) -> None:
        pass

    async def read(self, path: str) -> bytes | None:
        return (await self._get(path))[0]

    async def _get(self, path: str) -> tuple[bytes | None, str | None]:
        from botocore.exceptions import ClientError

        s3 = await self._client()
        try:
            resp = await s3.get_object(Bucket=self.bucket, Key=self._key(path))
        except ClientError as e:
            if _code(e) in _MISSING:
                return None, None
            raise
        async with resp["Body"] as body:
            data = await body.read()
        return data, resp.get("ETag")

    async def read_checkpoint(self) -> tuple[bytes | None, object]:
        return await self._get(CHECKPOINT_PATH)

    async def replace_checkpoint(self, data: bytes, version: object) -> bool:
        from botocore.exceptions import ClientError

        s3 = await self._client()
        condition = {"IfNoneMatch": "*"} if version is None else {"IfMatch": str(version)}
        try:
            await s3.put_object(Bucket=self.bucket, Key=self._key(CHECKPOINT_PATH), Body=data,
                                ContentType=CHECKPOINT_TYPE, CacheControl=CHECKPOINT_CACHE, **condition)
        except ClientError as e:
            if _code(e) in _PRECONDITION:
                return False
            raise
        return True

    async def close(self) -> None:
        stack, self._stack, self._s3 = self._stack, None, None
        if stack is not None:
            await stack.aclose()

"""Targets from the configuration."""
from __future__ import annotations

from ..config import TargetConfig
from .directory import DirectoryTarget
from .s3 import S3Target
from .targets import Target


def make_target(config: TargetConfig) -> Target:
    if config.type == "directory":
        assert config.path is not None, "config.py requires it"
        return DirectoryTarget(config.name, config.path)
    assert config.bucket is not None, "config.py requires it"
    return S3Target(config.name, endpoint_url=config.endpoint_url, bucket=config.bucket, prefix=config.prefix,
                    region=config.region)


async def check_targets(configs: tuple[TargetConfig, ...]) -> None:
    """Start-up: raise TargetError (a ConfigError) for the first target that cannot be used."""
    for c in configs:
        target = make_target(c)
        try:
            await target.check()
        finally:
            await target.close()

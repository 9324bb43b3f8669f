"""Static publication: the log's tlog-tiles tree on directories and S3 buckets
(issue 19; the sequencer's step 9; docs/deployment.md)."""
from .publisher import LogKeyVerifiers, StaticPublisher, TargetPublisher
from .targets import ObjectConflictError, StaticObject, Target, TargetError

__all__ = [
    "LogKeyVerifiers",
    "ObjectConflictError",
    "StaticObject",
    "StaticPublisher",
    "Target",
    "TargetError",
    "TargetPublisher",
]

"""The log's witness policy: a C2SP tlog-policy file whose `witness` lines carry the
witnesses' submission prefixes (URLs) and whose `quorum` line says how many
cosignatures a checkpoint needs before the log publishes it."""
from __future__ import annotations

from collections.abc import Collection
from pathlib import Path
from urllib.parse import urlsplit

from ..config import ConfigError
from ..formats import FormatError, Policy, parse_policy


def load_witness_policy(path: Path, origin: str, log_public_key: bytes | Collection[bytes]) -> Policy:
    """Parse the policy; every witness needs an http(s) URL and its own key. The log's
    public keys (`log_public_key`: its Ed25519 key, or that and its ML-DSA-44 key) are
    the only ones its own `log` lines may name."""
    log_keys = {log_public_key} if isinstance(log_public_key, bytes) else set(log_public_key)
    try:
        policy = parse_policy(path.read_bytes())
    except OSError as e:
        raise ConfigError(f"witness_policy: {path}: {e.strerror or e}") from None
    except FormatError as e:
        raise ConfigError(f"witness_policy: {path}: {e}") from None
    if not policy.witnesses:
        raise ConfigError(f"witness_policy: {path}: got no witness line, want the witnesses to ask")
    for name, witness in policy.witnesses.items():
        url = urlsplit(witness.url or "")
        if url.scheme not in ("http", "https") or not url.netloc or url.query or url.fragment:
            raise ConfigError(
                f"witness_policy: witness {name!r}: got URL {witness.url!r}, want its http(s) submission "
                "prefix (add-checkpoint is POSTed to <url>/add-checkpoint)"
            )
        if witness.verifier.public_key_bytes in log_keys:
            raise ConfigError(f"witness_policy: witness {name!r} uses the log's own key, want an independent key")
    for log in policy.logs.get(origin, ()):
        if getattr(log.verifier, "public_key_bytes", None) not in log_keys:
            raise ConfigError(f"witness_policy: its log line for {origin!r} names another key than the log's")
    return policy

"""Signed bundles for the submission benchmarks, and request files for the load generator.

Each bundle is a real, valid submission: a fleet payload signed by the bench's
signer and countersigner (both of one algorithm). Every bundle has its own fleet
id (sequence 1), so concurrent clients never trip the per-fleet rollback check
whatever order their requests arrive in. Files are cached in the data directory:
each benchmark run uses a fresh database, so the same bundles are new entries there.
"""
from __future__ import annotations

import base64
import datetime as dt
import json
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, x25519

from logserver.bundle import PAYLOAD_TYPE, sign_envelope

FORMAT_VERSION = 1


def _spki_b64(public) -> str:
    der = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(der).decode()


def payload_template() -> dict:
    """A realistic fleet payload: two HSM keys (X25519 and P-256), a year of validity."""
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    return {
        "fleet_id": "",
        "sequence": 1,
        "not_before": (now - dt.timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "not_after": (now + dt.timedelta(days=365)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "keys": [
            {"key_id": "hsm-1", "algorithm": "x25519",
             "public_key": _spki_b64(x25519.X25519PrivateKey.generate().public_key())},
            {"key_id": "hsm-2", "algorithm": "ecdsa-p256",
             "public_key": _spki_b64(ec.generate_private_key(ec.SECP256R1()).public_key())},
        ],
    }


def _load_private(path: Path):
    return serialization.load_pem_private_key(path.read_bytes(), password=None)


def bundle_file(env, algorithm: str, count: int) -> Path:
    """A request file (one `POST /v1/bundles <body>` line per bundle), made once and cached."""
    signer_key, _ = env.authority(algorithm, "signer")
    counter_key, _ = env.authority(algorithm, "countersigner")
    directory = env.data_dir / "bundles"
    directory.mkdir(exist_ok=True)
    path = directory / f"v{FORMAT_VERSION}-{algorithm}-{count}.tsv"
    if path.exists():
        return path
    keys = [_load_private(signer_key), _load_private(counter_key)]
    template = payload_template()
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w") as out:
        for i in range(count):
            template["fleet_id"] = f"bench-{algorithm}-{i}"
            payload = json.dumps(template, separators=(",", ":")).encode()
            body = sign_envelope(PAYLOAD_TYPE, payload, keys).to_json().decode()
            out.write(f"POST\t/v1/bundles\t{body}\n")
    tmp.rename(path)
    return path


def tail_of(path: Path, count: int) -> Path:
    """The last `count` request lines of `path`, in a file of their own (made once).

    For an untimed warm-up before a measured run that sends `path` from its start:
    no bundle is sent twice as long as the two runs together send fewer lines than
    `path` has (each bundle is its own fleet, so a repeat would be a duplicate)."""
    out = path.with_name(f"{path.stem}-tail{count}{path.suffix}")
    if not out.exists():
        with open(path) as f:
            lines = f.readlines()
        tmp = out.with_suffix(".tmp")
        tmp.write_text("".join(lines[-count:]))
        tmp.rename(out)
    return out


def first_body(path: Path) -> bytes:
    """The JSON body of the first request in a bundle file (for the ceiling's smoke check)."""
    with open(path) as f:
        return f.readline().rstrip("\n").split("\t", 2)[2].encode()


def write_requests(path: Path, lines) -> Path:
    """Write `(method, path)` GET lines for the load generator."""
    with open(path, "w") as out:
        for method, target in lines:
            out.write(f"{method}\t{target}\n")
    return path

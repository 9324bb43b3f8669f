"""Sign a bundle: the tool the signer and the countersigner each run.

With --payload it starts a DSSE envelope over the payload file's exact bytes; with
--envelope it adds a signature to an existing envelope (the countersignature). The
payload is checked against the bundle schema first, so a mistake is caught
before anyone signs it.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..bundle import (
    PAYLOAD_TYPE,
    AuthorityPrivateKey,
    BundleError,
    add_signature,
    algorithm_of,
    authority_private_key,
    keyid_for,
    parse_envelope,
    parse_payload,
    sign_envelope,
)
from ..config import ConfigError
from ..keys.files import load_private_key
from .errors import CliError

HELP = "create or countersign a DSSE bundle envelope"
EXAMPLES = """\
  logserver sign --key signer.key --payload payload.json --out bundle.json
  logserver sign --key countersigner.key --envelope bundle.json --out bundle.json
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--key", required=True, type=Path,
                   help="authority private key (PKCS#8 PEM: Ed25519, ECDSA P-256 or ML-DSA-44)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--payload", type=Path, help="payload JSON file: start a new envelope")
    src.add_argument("--envelope", type=Path, help="existing envelope: add a signature")
    p.add_argument("--out", required=True, type=Path, help="where to write the envelope (may equal --envelope)")


def load_authority_private_key(path: Path) -> AuthorityPrivateKey:
    try:
        key = load_private_key(path, "--key")
    except ConfigError as e:
        raise CliError(str(e)) from None
    try:
        return authority_private_key(key)
    except TypeError as e:
        raise CliError(f"--key: {path}: {e}") from None


def run(args: argparse.Namespace) -> int:
    key = load_authority_private_key(args.key)
    keyid = keyid_for(key.public_key())
    try:
        if args.payload is not None:
            payload = args.payload.read_bytes()
            bundle = parse_payload(payload)
            envelope = sign_envelope(PAYLOAD_TYPE, payload, [key])
        else:
            envelope = parse_envelope(args.envelope.read_bytes())
            if any(s.keyid == keyid for s in envelope.signatures):
                raise CliError(f"the envelope already has a signature by keyid {keyid}")
            bundle = parse_payload(envelope.payload)
            envelope = add_signature(envelope, key)
    except BundleError as e:
        raise CliError(f"{e.code}: {e}") from None
    except OSError as e:
        raise CliError(str(e)) from None
    args.out.write_text(json.dumps(envelope.to_dict(), indent=2) + "\n")
    algorithm = algorithm_of(key.public_key())
    print(f"signed fleet {bundle.fleet_id} sequence {bundle.sequence} with {algorithm} keyid {keyid}")
    print(f"wrote {args.out} ({len(envelope.signatures)} signature(s))")
    return 0

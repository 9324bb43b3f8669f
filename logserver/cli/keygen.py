"""Make a key: the log's Ed25519 signing key, a witness's cosigning key, or a trust
authority's signing key.

  logserver keygen log --origin example.com/log --out log.key
      writes log.key (PKCS#8 PEM, mode 0600) and prints the log's verifier key (vkey).
  logserver keygen witness --name witness.example/w1 --out witness.key
      writes witness.key (PKCS#8 PEM, mode 0600) and prints the witness's cosignature/v1
      vkey (signature type 0x04), for the `witness` lines of a tlog-policy.
  logserver keygen authority --algorithm ed25519|ecdsa-p256 --out signer.key
      writes signer.key (private, 0600) and signer.pub.pem (public SPKI, for the
      server's [[authorities]] config and for clients), and prints the keyid.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from ..bundle import keyid_for
from ..keys.log_key import LogKey, generate_log_key_pem
from .errors import CliError

HELP = "make a log key or an authority key"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("kind", choices=["log", "witness", "authority"], help="which kind of key")
    p.add_argument("--out", required=True, type=Path, help="private key file to create")
    p.add_argument("--origin", help="log origin (kind log), e.g. example.com/log")
    p.add_argument("--name", help="witness key name (kind witness), e.g. witness.example/w1")
    p.add_argument("--algorithm", choices=["ed25519", "ecdsa-p256"], default="ed25519",
                   help="authority key algorithm (default ed25519)")
    p.add_argument("--force", action="store_true", help="overwrite existing files")


def write_private(path: Path, pem: bytes, force: bool) -> None:
    if path.exists() and not force:
        raise CliError(f"{path} exists; pass --force to overwrite")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    path.chmod(0o600)


def make_log_key(out: Path, origin: str, force: bool = False) -> LogKey:
    pem = generate_log_key_pem()
    write_private(out, pem, force)
    return LogKey.load(out, origin)


def make_witness_key(out: Path, name: str, force: bool = False):
    from ..formats import FormatError
    from ..formats.vkey import check_key_name
    from ..witness import Cosigner

    try:
        check_key_name(name)
    except FormatError as e:
        raise CliError(f"--name: {e}") from None
    write_private(out, generate_log_key_pem(), force)  # the same Ed25519 PKCS#8 PEM as a log key
    return Cosigner.load(out, name)


def make_authority_key(out: Path, algorithm: str, force: bool = False) -> tuple[Path, str]:
    if algorithm == "ed25519":
        key = ed25519.Ed25519PrivateKey.generate()
    else:
        key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    write_private(out, pem, force)
    pub_path = out.with_name(out.stem + ".pub.pem")
    pub_path.write_bytes(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return pub_path, keyid_for(key.public_key())


def run(args: argparse.Namespace) -> int:
    if args.kind == "log":
        if not args.origin:
            raise CliError("keygen log needs --origin (the log's name, e.g. example.com/log)")
        key = make_log_key(args.out, args.origin, args.force)
        print(f"wrote {args.out} (keep it secret)")
        print(f"origin: {key.origin}")
        print(f"vkey:   {key.vkey}")
    elif args.kind == "witness":
        if not args.name:
            raise CliError("keygen witness needs --name (the cosigner name, e.g. witness.example/w1)")
        cosigner = make_witness_key(args.out, args.name, args.force)
        print(f"wrote {args.out} (keep it secret)")
        print(f"name: {cosigner.name}")
        print(f"vkey: {cosigner.vkey}")
    else:
        pub, keyid = make_authority_key(args.out, args.algorithm, args.force)
        print(f"wrote {args.out} (keep it secret) and {pub}")
        print(f"algorithm: {args.algorithm}")
        print(f"keyid:     {keyid}")
    return 0

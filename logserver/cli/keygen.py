"""Make a key: the log's signing keys, a witness's cosigning key, or a trust
authority's signing key.

`log` writes the log's two private keys (PKCS#8 PEM, mode 0600): the Ed25519 key at
--out and the ML-DSA-44 key (seed form) beside it, OUT stem + `.mldsa44.key` (the
config's `log_key_mldsa44`), and prints both vkeys; `--add-ml-dsa-44` adds the second
to an existing log key, `--no-ml-dsa-44` makes the first only.
`witness` does the same for a witness and prints its cosignature vkey, for the
`witness` lines of a tlog-policy: with `--algorithm ed25519` (the default) an Ed25519
`cosignature/v1` key (signature type 0x04), with `--algorithm ml-dsa-44` an ML-DSA-44
`subtree/v1` key (type 0x06, tlog-cosignature v1.1). A witness with both runs keygen
twice and lists both files as its `key`. `authority` writes
the private key (0600; Ed25519, ECDSA P-256 or ML-DSA-44, PKCS#8 PEM, an ML-DSA key as
its 32-byte seed) and, beside it, NAME.pub.pem (the public SPKI, for the server's
[[authorities]] config and for clients), and prints the keyid. An existing file is
never overwritten (a symlink is not followed), .pub.pem included, unless --force.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives import serialization

from ..bundle import AUTHORITY_ALGORITHMS, generate_authority_key, keyid_for
from ..keys.log_key import LogKey, generate_log_key_pem, generate_mldsa44_key_pem
from .errors import CliError, UsageError

if TYPE_CHECKING:
    from ..witness import Cosigner

HELP = "make a log key or an authority key"
EXAMPLES = """\
  logserver keygen log --origin example.com/log --out log.key   # and log.mldsa44.key
  logserver keygen log --origin example.com/log --out log.key --add-ml-dsa-44   # existing log
  logserver keygen witness --name witness.example/w1 --out witness.key
  logserver keygen witness --name witness.example/w1 --algorithm ml-dsa-44 --out witness-mldsa44.key
  logserver keygen authority --algorithm ed25519 --out signer.key          # and signer.pub.pem
  logserver keygen authority --algorithm ecdsa-p256 --out countersigner.key
  logserver keygen authority --algorithm ml-dsa-44 --out pq-countersigner.key  # post-quantum
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("kind", choices=["log", "witness", "authority"], help="which kind of key")
    p.add_argument("--out", required=True, type=Path, help="private key file to create")
    p.add_argument("--origin", help="log origin (kind log), e.g. example.com/log")
    p.add_argument("--name", help="witness key name (kind witness), e.g. witness.example/w1")
    p.add_argument("--algorithm", choices=AUTHORITY_ALGORITHMS, default="ed25519",
                   help="key algorithm (default ed25519): authority ed25519, ecdsa-p256 or ml-dsa-44 "
                        "(post-quantum, FIPS 204); witness ed25519 or ml-dsa-44")
    p.add_argument("--add-ml-dsa-44", action="store_true",
                   help="kind log: only add the ML-DSA-44 key (OUT stem + .mldsa44.key) to the existing log key "
                        "OUT, keeping its origin (docs/operations.md)")
    p.add_argument("--no-ml-dsa-44", action="store_true",
                   help="kind log: make the Ed25519 key only (checkpoints then carry no ML-DSA-44 signature)")
    p.add_argument("--force", action="store_true",
                   help="replace existing files (without it, keygen never overwrites a file, .pub.pem included)")


def write_private(path: Path, pem: bytes, force: bool) -> None:
    """Create `path` with mode 0600 holding `pem` (a private key)."""
    create_file(path, pem, 0o600, force)


def create_file(path: Path, data: bytes, mode: int, force: bool) -> None:
    """Write a new file `path` (mode `mode`), never through a symbolic link.

    Without `force` an existing name, a symlink (even a dangling one) included, is
    refused: O_CREAT|O_EXCL fails on it rather than follow it. With `force` the data
    goes to a new temporary file that replaces the name (rename replaces a symlink
    itself, not its target).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    target = path.with_name(f".{path.name}.{os.getpid()}.tmp") if force else path
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    except FileExistsError:
        raise CliError(f"{path} exists; pass --force to overwrite it") from None
    except OSError as e:
        raise CliError(f"cannot create {path}: {e.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)  # exactly `mode`, whatever the umask
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if force:
            os.replace(target, path)
    except OSError as e:
        target.unlink(missing_ok=True)  # made by this call (O_EXCL): ours to remove
        raise CliError(f"cannot write {path}: {e.strerror or e}") from None


def _refuse_existing(paths: list[Path]) -> None:
    for path in paths:
        if os.path.lexists(path):
            raise CliError(f"{path} exists; pass --force to overwrite it")


def mldsa44_key_path(out: Path) -> Path:
    """Where `keygen log --out out` writes the log's ML-DSA-44 key: log.key -> log.mldsa44.key."""
    return out.with_name(out.stem + ".mldsa44.key")


def make_log_key(out: Path, origin: str, force: bool = False, *, mldsa44: bool = True) -> LogKey:
    """Write the log's Ed25519 key to `out` and (with `mldsa44`) its ML-DSA-44 key beside it."""
    from ..formats import FormatError
    from ..formats.vkey import check_key_name

    try:
        check_key_name(origin)
    except FormatError as e:
        raise UsageError(f"--origin: {e}") from None
    pq = mldsa44_key_path(out)
    if not force:  # both names checked before either file is written
        _refuse_existing([out, pq] if mldsa44 else [out])
    write_private(out, generate_log_key_pem(), force)
    if mldsa44:
        try:
            write_private(pq, generate_mldsa44_key_pem(), force)
        except CliError:
            if not force:
                out.unlink(missing_ok=True)  # created above; no half-made pair stays behind
            raise
    return LogKey.load(out, origin, mldsa44_path=pq if mldsa44 else None)


def add_log_mldsa44_key(out: Path, origin: str, force: bool = False) -> LogKey:
    """Give the existing log key `out` an ML-DSA-44 companion (docs/operations.md, "Adding
    an ML-DSA-44 key to a log"); the Ed25519 key is read, never written."""
    pq = mldsa44_key_path(out)
    from ..config import ConfigError

    try:
        LogKey.load(out, origin)  # there, private, Ed25519: else one line
    except ConfigError as e:
        raise CliError(f"--out: {e}") from None
    write_private(pq, generate_mldsa44_key_pem(), force)
    return LogKey.load(out, origin, mldsa44_path=pq)


def make_witness_key(out: Path, name: str, force: bool = False, algorithm: str = "ed25519") -> Cosigner:
    from cryptography.hazmat.primitives.asymmetric.mldsa import MLDSA44PrivateKey

    from ..formats import FormatError
    from ..formats.cosignature import MLDSA44CosignatureSigner
    from ..formats.vkey import check_key_name
    from ..witness import Cosigner

    if algorithm not in ("ed25519", "ml-dsa-44"):
        raise UsageError(f"--algorithm: got {algorithm!r} for a witness key, want ed25519 or ml-dsa-44")
    try:
        check_key_name(name)
        if algorithm == "ml-dsa-44":
            MLDSA44CosignatureSigner(name, MLDSA44PrivateKey.generate())  # the name fits the cosigned message
    except FormatError as e:
        raise UsageError(f"--name: {e}") from None
    if algorithm == "ed25519":
        pem = generate_log_key_pem()  # the same Ed25519 PKCS#8 PEM as a log key
    else:
        pem = MLDSA44PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    write_private(out, pem, force)
    return Cosigner.load([out], name)


def make_authority_key(out: Path, algorithm: str, force: bool = False) -> tuple[Path, str]:
    key = generate_authority_key(algorithm)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    pub_path = public_key_path(out)
    if not force:  # both names checked before either file is written
        _refuse_existing([out, pub_path])
    write_private(out, pem, force)
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    try:
        create_file(pub_path, public_pem, 0o644, force)
    except CliError:
        if not force:
            out.unlink(missing_ok=True)  # created above; no half-made key pair stays behind
        raise
    return pub_path, keyid_for(key.public_key())


def public_key_path(private: Path) -> Path:
    """Where `keygen authority --out private` writes the public key."""
    return private.with_name(private.stem + ".pub.pem")


def run(args: argparse.Namespace) -> int:
    if args.kind == "log":
        if not args.origin:
            raise UsageError("keygen log needs --origin (the log's name, e.g. example.com/log)")
        if args.add_ml_dsa_44 and args.no_ml_dsa_44:
            raise UsageError("--add-ml-dsa-44 and --no-ml-dsa-44 contradict each other")
        if args.add_ml_dsa_44:
            key = add_log_mldsa44_key(args.out, args.origin, args.force)
            print(f"wrote {mldsa44_key_path(args.out)} (keep it secret); {args.out} unchanged")
        else:
            key = make_log_key(args.out, args.origin, args.force, mldsa44=not args.no_ml_dsa_44)
            written = f"{args.out}" + ("" if args.no_ml_dsa_44 else f" and {mldsa44_key_path(args.out)}")
            print(f"wrote {written} (keep them secret)")
        print(f"origin: {key.origin}")
        print(f"vkey:   {key.vkey}")
        if key.mldsa44_vkey is not None:
            print(f"ml-dsa-44 vkey: {key.mldsa44_vkey}")
            print(f"config: log_key_mldsa44 = \"{mldsa44_key_path(args.out).name}\"")
    elif args.kind == "witness":
        if not args.name:
            raise UsageError("keygen witness needs --name (the cosigner name, e.g. witness.example/w1)")
        cosigner = make_witness_key(args.out, args.name, args.force, args.algorithm)
        print(f"wrote {args.out} (keep it secret)")
        print(f"name: {cosigner.name}")
        print(f"algorithm: {args.algorithm}")
        print(f"vkey: {cosigner.vkey}")
    else:
        pub, keyid = make_authority_key(args.out, args.algorithm, args.force)
        print(f"wrote {args.out} (keep it secret) and {pub}")
        print(f"algorithm: {args.algorithm}")
        print(f"keyid:     {keyid}")
    return 0

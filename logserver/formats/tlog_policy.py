"""C2SP tlog-policy: which logs and witnesses to trust, and the cosigning quorum.

    log <vkey> [<url>]
    witness <name> <vkey> [<url>]
    group <name> <all|any|k> <member>...
    quorum <name|none>

Lines end in a newline; items are separated by runs of spaces and tabs; blank lines and
"#" comment lines are ignored. Keys are vkeys of the type their role signs with
("Public key representation": see tlog-checkpoint and tlog-cosignature): a log's is
0x01 (Ed25519 note signature), 0x04 (the log's Ed25519 cosignature/v1 line) or 0x06 (its
ML-DSA-44 subtree/v1 cosignature, which tlog-checkpoint recommends logs add); a
witness's is 0x04 or 0x06. A witness with keys of both types is two witness lines.
Groups and the quorum may only name witnesses and groups defined on earlier lines, and
each name may be a group member at most once in the file.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Set
from dataclasses import dataclass
from types import MappingProxyType

from .checkpoint import Checkpoint, parse_checkpoint
from .cosignature import CosignatureVerifier, MLDSA44CosignatureVerifier
from .errors import FormatError, PolicyFormatError, QuorumNotMetError, UnknownOriginError, UnverifiedNoteError
from .keys import COSIGNATURE_SIG_TYPES, SUPPORTED_SIG_TYPES, AnyCosignatureVerifier, verifier_from_vkey
from .note import NoteVerifier, OpenedNote, parse_note, verify_note
from .strict import clip
from .vkey import parse_vkey

NONE = "none"
"""The predefined quorum name requiring no cosignature; never a valid group member."""

MAX_POLICY_SIZE = 1 << 20
MAX_LOGS = MAX_WITNESSES = MAX_GROUPS = 256
"""Implementation limits (tlog-policy "Implementation limits" recommends at least 32)."""

# tlog-policy "Character set": tab, newline, 0x20-0x7E and 0x80-0xFF only.
_FORBIDDEN_OCTET = re.compile(rb"[\x00-\x08\x0b-\x1f\x7f]")
_WHITESPACE = re.compile(rb"[ \t]+")
_THRESHOLD = re.compile(rb"0|[1-9][0-9]*")


def _text(octets: bytes) -> str:
    # Names and URLs are opaque octet strings; surrogateescape maps every byte string
    # to a distinct str, so comparing the str compares the octets.
    return octets.decode("utf-8", "surrogateescape")


@dataclass(frozen=True)
class PolicyLog:
    """A trusted log: its key (named after its origin) and optional URL."""

    origin: str
    verifier: NoteVerifier
    url: str | None


@dataclass(frozen=True)
class PolicyWitness:
    """A trusted witness: its policy-local name, cosigner key (Ed25519 cosignature/v1 or
    ML-DSA-44 subtree/v1) and optional URL."""

    name: str
    verifier: AnyCosignatureVerifier
    url: str | None


@dataclass(frozen=True)
class PolicyGroup:
    """A group witnessing a checkpoint iff at least `threshold` of its members do."""

    name: str
    threshold: int
    members: tuple[str, ...]


@dataclass(frozen=True)
class Policy:
    """A parsed policy. `logs` maps an origin to its (one or more) log keys."""

    logs: Mapping[str, tuple[PolicyLog, ...]]
    witnesses: Mapping[str, PolicyWitness]
    groups: Mapping[str, PolicyGroup]
    quorum: str

    def check_quorum(self, witnessed: Set[str]) -> None:
        """Raise `QuorumNotMetError` unless the witnesses named in `witnessed` (policy names
        whose cosignatures verified) satisfy the quorum."""
        unknown = set(witnessed) - self.witnesses.keys()
        if unknown:
            raise ValueError(f"not witnesses of this policy: {sorted(unknown)}")
        if self.quorum == NONE:
            return
        memo: dict[str, bool] = {}
        if not self._satisfied(self.quorum, witnessed, memo):
            raise QuorumNotMetError(f"quorum not met: {self._explain(self.quorum, witnessed, memo)}")

    def _satisfied(self, name: str, witnessed: Set[str], memo: dict[str, bool]) -> bool:
        if name not in memo:
            group = self.groups.get(name)
            if group is None:
                memo[name] = name in witnessed
            else:
                count = sum(self._satisfied(m, witnessed, memo) for m in group.members)
                memo[name] = count >= group.threshold
        return memo[name]

    def _explain(self, name: str, witnessed: Set[str], memo: dict[str, bool]) -> str:
        group = self.groups.get(name)
        if group is None:
            return f"witness {name!r}: got no verified cosignature, want one"
        missing = [m for m in group.members if not memo[m]]
        count = len(group.members) - len(missing)
        return (
            f"group {name!r}: got {count} of {len(group.members)} members witnessed, "
            f"want at least {group.threshold} (not witnessed: {', '.join(map(repr, missing))})"
        )

    def verify_checkpoint(self, note: bytes | str) -> tuple[Checkpoint, OpenedNote, frozenset[str]]:
        """Verify a checkpoint note against the policy.

        Requires a verified signature from a log listed for the checkpoint's origin and
        cosignatures meeting the quorum; any invalid signature by a known key rejects the
        note. Returns the checkpoint, the opened note and the names of the witnesses
        whose cosignatures verified.
        """
        parsed = parse_note(note)
        checkpoint = parse_checkpoint(parsed.text)
        logs = self.logs.get(checkpoint.origin)
        if not logs:
            raise UnknownOriginError(f"checkpoint origin: got {checkpoint.origin!r}, want one of {sorted(self.logs)}")
        log_verifiers = [log.verifier for log in logs]
        opened = verify_note(parsed, log_verifiers + [w.verifier for w in self.witnesses.values()])
        if not any(opened.signature_by(v) for v in log_verifiers):
            raise UnverifiedNoteError(
                f"checkpoint for {checkpoint.origin!r}: got no verified log signature, "
                f"want one from {len(log_verifiers)} log keys"
            )
        witnessed = frozenset(
            name for name, witness in self.witnesses.items() if opened.signature_by(witness.verifier)
        )
        self.check_quorum(witnessed)
        return checkpoint, opened, witnessed


class _PolicyBuilder:
    def __init__(self) -> None:
        self.logs: dict[str, list[PolicyLog]] = {}
        self.witnesses: dict[str, PolicyWitness] = {}
        self.groups: dict[str, PolicyGroup] = {}
        self.quorum: str | None = None
        self.members_used: set[str] = set()
        self.log_keys: set[bytes] = set()
        self.witness_keys: set[bytes] = set()
        self.verifier_ids: set[tuple[str, bytes]] = set()
        self.log_count = 0

    def _vkey(self, octets: bytes, allowed: frozenset[int], seen_keys: set[bytes], what: str) -> NoteVerifier:
        """Parse a vkey, refusing a public key already in `seen_keys` (tlog-policy: two
        vkeys wrapping the same public key are duplicates, whatever their names)."""
        try:
            vkey = octets.decode("utf-8")
            public_key = parse_vkey(vkey).public_key
            verifier = verifier_from_vkey(vkey, allowed)
        except UnicodeDecodeError:
            raise PolicyFormatError(f"vkey: got {octets[:40]!r}, want UTF-8") from None
        except FormatError as exc:
            raise PolicyFormatError(str(exc)) from None
        if public_key in seen_keys:
            raise PolicyFormatError(f"{what}: duplicate public key, want each key listed once")
        seen_keys.add(public_key)
        # open_note refuses two verifiers sharing name and key ID; only a log and a
        # witness listing one key under one name and type could get here.
        key_id = (verifier.name, verifier.key_id)
        if key_id in self.verifier_ids:
            raise PolicyFormatError(f"{what}: another key has the same key name and key ID {verifier.key_id.hex()}")
        self.verifier_ids.add(key_id)
        return verifier

    def _new_name(self, octets: bytes) -> str:
        name = _text(octets)
        if name == NONE or name in self.witnesses or name in self.groups:
            raise PolicyFormatError(f"name {clip(name)}: already defined, want a new name")
        return name

    def _defined(self, octets: bytes, what: str) -> str:
        name = _text(octets)
        if name == NONE:
            raise PolicyFormatError(f"{what}: got 'none', which only the quorum line may name")
        if name not in self.witnesses and name not in self.groups:
            raise PolicyFormatError(f"{what} {clip(name)}: want a witness or group defined on an earlier line")
        return name

    def log(self, args: list[bytes]) -> None:
        if len(args) not in (1, 2):
            raise PolicyFormatError(f"log line: got {len(args)} items after 'log', want <vkey> [<url>]")
        if self.log_count >= MAX_LOGS:
            raise PolicyFormatError(f"logs: want at most {MAX_LOGS}")
        verifier = self._vkey(args[0], SUPPORTED_SIG_TYPES, self.log_keys, "log")
        url = _text(args[1]) if len(args) == 2 else None
        self.logs.setdefault(verifier.name, []).append(PolicyLog(verifier.name, verifier, url))
        self.log_count += 1

    def witness(self, args: list[bytes]) -> None:
        if len(args) not in (2, 3):
            raise PolicyFormatError(f"witness line: got {len(args)} items after 'witness', want <name> <vkey> [<url>]")
        if len(self.witnesses) >= MAX_WITNESSES:
            raise PolicyFormatError(f"witnesses: want at most {MAX_WITNESSES}")
        name = self._new_name(args[0])
        verifier = self._vkey(args[1], COSIGNATURE_SIG_TYPES, self.witness_keys, f"witness {name!r}")
        assert isinstance(verifier, (CosignatureVerifier, MLDSA44CosignatureVerifier))
        url = _text(args[2]) if len(args) == 3 else None
        self.witnesses[name] = PolicyWitness(name, verifier, url)

    def group(self, args: list[bytes]) -> None:
        if len(args) < 3:
            raise PolicyFormatError(f"group line: got {len(args)} items after 'group', want <name> <k> <member>...")
        if len(self.groups) >= MAX_GROUPS:
            raise PolicyFormatError(f"groups: want at most {MAX_GROUPS}")
        name = self._new_name(args[0])
        members = []
        for octets in args[2:]:
            member = self._defined(octets, f"group {name!r} member")
            if member in self.members_used:
                raise PolicyFormatError(
                    f"group {name!r} member {member!r}: already a group member, want each name once")
            self.members_used.add(member)
            members.append(member)
        threshold = self._threshold(args[1], len(members), name)
        self.groups[name] = PolicyGroup(name, threshold, tuple(members))

    @staticmethod
    def _threshold(octets: bytes, n: int, name: str) -> int:
        if octets == b"all":
            return n
        if octets == b"any":
            return 1
        if _THRESHOLD.fullmatch(octets) is None:
            raise PolicyFormatError(f"group {name!r} threshold: got {octets[:40]!r}, want all, any or a decimal k")
        # Bound the digits before int(): a 1 MiB policy could otherwise hold a huge literal.
        k = int(octets) if len(octets) <= 9 else n + 1
        if not 1 <= k <= n:
            raise PolicyFormatError(
                f"group {name!r} threshold: got {clip(_text(octets))}, want 1 <= k <= {n} (the member count)"
            )
        return k

    def quorum_line(self, args: list[bytes]) -> None:
        if len(args) != 1:
            raise PolicyFormatError(f"quorum line: got {len(args)} items after 'quorum', want 1")
        if self.quorum is not None:
            raise PolicyFormatError("quorum: got a second quorum line, want exactly one")
        self.quorum = NONE if args[0] == NONE.encode() else self._defined(args[0], "quorum")

    def build(self) -> Policy:
        if self.quorum is None:
            raise PolicyFormatError("quorum: got no quorum line, want exactly one")
        return Policy(
            logs=MappingProxyType({origin: tuple(logs) for origin, logs in self.logs.items()}),
            witnesses=MappingProxyType(dict(self.witnesses)),
            groups=MappingProxyType(dict(self.groups)),
            quorum=self.quorum,
        )


def parse_policy(data: bytes | str) -> Policy:
    """Parse a tlog-policy file strictly."""
    if isinstance(data, str):
        try:
            data = data.encode("utf-8")
        except UnicodeEncodeError:
            raise PolicyFormatError("policy: got lone surrogates, want octets") from None
    if len(data) > MAX_POLICY_SIZE:
        raise PolicyFormatError(f"policy size: got {len(data)} bytes, want at most {MAX_POLICY_SIZE}")
    forbidden = _FORBIDDEN_OCTET.search(data)
    if forbidden:
        raise PolicyFormatError(
            f"policy: got octet 0x{forbidden.group()[0]:02x} at {forbidden.start()}, "
            "want tab, newline, 0x20-0x7e or 0x80-0xff"
        )
    if data and not data.endswith(b"\n"):
        raise PolicyFormatError("policy: want every line, the last one included, to end in a newline")
    builder = _PolicyBuilder()
    actions = {
        b"log": builder.log,
        b"witness": builder.witness,
        b"group": builder.group,
        b"quorum": builder.quorum_line,
    }
    for number, line in enumerate(data.split(b"\n")[:-1], start=1):
        stripped = line.strip(b" \t")
        if not stripped or stripped.startswith(b"#"):
            continue
        keyword, *args = _WHITESPACE.split(stripped)
        action = actions.get(keyword)
        if action is None:
            raise PolicyFormatError(f"line {number}: got keyword {keyword[:40]!r}, want log, witness, group or quorum")
        try:
            action(args)
        except PolicyFormatError as exc:
            raise PolicyFormatError(f"line {number}: {exc}") from None
    return builder.build()

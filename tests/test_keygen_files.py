"""Key files are never destroyed: `keygen` refuses to overwrite or follow a symlink, and
`serve --dev` never makes new keys over a directory's existing ones."""
from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from logserver.cli import main
from logserver.cli.keygen import make_authority_key, make_log_key
from logserver.cli.serve import prepare_dev

CLI = [sys.executable, "-m", "logserver.cli"]
KEYGEN = {
    "log": ["keygen", "log", "--origin", "example.com/log"],
    "witness": ["keygen", "witness", "--name", "witness.example/w1"],
    "authority": ["keygen", "authority", "--algorithm", "ecdsa-p256"],
}


def cli(*argv: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *argv], cwd=cwd, capture_output=True, text=True, timeout=120,
                          env=env or dict(os.environ))


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


@pytest.mark.parametrize("kind", KEYGEN)
def test_keygen_never_overwrites_an_existing_key_without_force(tmp_path, kind):
    out = tmp_path / "k.key"
    out.write_bytes(b"the old key")
    done = cli(*KEYGEN[kind], "--out", str(out), cwd=tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stderr == f"logserver keygen: error: {out} exists; pass --force to overwrite it\n"
    assert out.read_bytes() == b"the old key"
    assert main([*KEYGEN[kind], "--out", str(out), "--force"]) == 0
    assert out.read_bytes() != b"the old key" and _mode(out) == 0o600


def test_keygen_authority_refuses_an_existing_public_key_and_writes_nothing(tmp_path):
    out, pub = tmp_path / "signer.key", tmp_path / "signer.pub.pem"
    pub.write_bytes(b"a pinned public key")
    done = cli(*KEYGEN["authority"], "--out", str(out), cwd=tmp_path)
    assert done.returncode == 1 and f"{pub} exists; pass --force" in done.stderr, done.stderr
    assert not os.path.lexists(out)
    assert pub.read_bytes() == b"a pinned public key"


@pytest.mark.parametrize("kind", KEYGEN)
def test_keygen_does_not_follow_a_symlink(tmp_path, kind):
    target, dangling_target = tmp_path / "elsewhere", tmp_path / "not-there"
    target.write_bytes(b"precious")
    link, dangling = tmp_path / "link.key", tmp_path / "dangling.key"
    link.symlink_to(target)
    dangling.symlink_to(dangling_target)
    for out in (link, dangling):
        done = cli(*KEYGEN[kind], "--out", str(out), cwd=tmp_path)
        assert done.returncode == 1 and "exists; pass --force" in done.stderr, done.stderr
    assert target.read_bytes() == b"precious" and not dangling_target.exists()
    # --force replaces the link itself with a new file; what it pointed to is untouched.
    assert main([*KEYGEN[kind], "--out", str(link), "--force"]) == 0
    assert not link.is_symlink() and _mode(link) == 0o600 and b"PRIVATE KEY" in link.read_bytes()
    assert target.read_bytes() == b"precious"


def test_key_files_get_exact_modes_whatever_the_umask(tmp_path):
    old = os.umask(0)
    try:
        make_log_key(tmp_path / "log.key", "example.com/log")
        pub, _ = make_authority_key(tmp_path / "signer.key", "ed25519")
    finally:
        os.umask(old)
    assert _mode(tmp_path / "log.key") == 0o600 and _mode(tmp_path / "signer.key") == 0o600
    assert _mode(pub) == 0o644


def _dev_keys(directory: Path) -> dict[str, bytes]:
    make_log_key(directory / "log.key", "localhost/logserver-dev")
    make_authority_key(directory / "signer.key", "ed25519")
    make_authority_key(directory / "countersigner.key", "ecdsa-p256")
    return {p.name: p.read_bytes() for p in directory.iterdir()}


def test_serve_dev_refuses_a_directory_with_keys_but_no_config(tmp_path):
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    data.chmod(0o700)
    before = _dev_keys(data)
    env = dict(os.environ, DATABASE_URL="postgresql://127.0.0.1:1/never-reached")
    done = cli("serve", "--dev", "--data-dir", "data", "--listen", "127.0.0.1:0", cwd=tmp_path, env=env)
    assert done.returncode == 1, done.stdout + done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert lines[0].startswith(
        f"logserver serve: error: --data-dir {data} has log.key, log.mldsa44.key, signer.key"), lines
    assert "but no logserver.toml: refusing to make new keys" in lines[0]
    assert {p.name: p.read_bytes() for p in data.iterdir()} == before
    assert _mode(data) == 0o700


@pytest.mark.parametrize("present", ["log.key", "countersigner.pub.pem"])
def test_serve_dev_refuses_even_one_key_file(tmp_path, present):
    (tmp_path / present).write_bytes(b"kept")
    with pytest.raises(Exception, match=f"has {present} but no logserver.toml"):
        prepare_dev(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == [present] and (tmp_path / present).read_bytes() == b"kept"


def test_serve_dev_keeps_the_mode_of_an_existing_directory(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    data.chmod(0o700)
    config = prepare_dev(data)
    assert config == data / "logserver.toml" and config.is_file()
    assert _mode(data) == 0o700
    assert {_mode(data / n) for n in ("log.key", "signer.key", "countersigner.key")} == {0o600}
    # The second run reuses what the first made.
    keys = (data / "log.key").read_bytes()
    assert prepare_dev(data) == config and (data / "log.key").read_bytes() == keys

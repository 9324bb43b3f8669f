#!/usr/bin/env python3
"""One-command set-up for newcomers and CI.

    python3 scripts/dev.py serve   # create .venv if needed, then `logserver serve --dev`
    python3 scripts/dev.py test    # create .venv if needed, then run the whole test suite
    python3 scripts/dev.py bench   # create .venv if needed, then run the benchmark suite (bench/)

The virtual environment lives in `.venv` at the top of the checkout. It is
(re)installed whenever pyproject.toml or constraints.txt change, so a fresh
clone needs nothing but Python 3.11+ and access to PyPI. Extra arguments are
passed on: `python3 scripts/dev.py test -k merkle`, `... serve --listen 127.0.0.1:9000`,
`... bench --full --with-10m` (see bench/README.md).
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"
STAMP = VENV / ".logserver-install-stamp"


def _bin(name: str) -> Path:
    return VENV / ("Scripts" if os.name == "nt" else "bin") / name


def _install_digest() -> str:
    h = hashlib.sha256()
    for name in ("pyproject.toml", "constraints.txt"):
        p = ROOT / name
        if p.exists():
            h.update(name.encode() + b"\0" + p.read_bytes())
    return h.hexdigest()


def ensure_venv() -> None:
    if sys.version_info < (3, 11):
        sys.exit(f"logserver needs Python 3.11 or newer; this is {sys.version.split()[0]}")
    want = _install_digest()
    if STAMP.exists() and STAMP.read_text() == want and _bin("python").exists():
        return
    if not _bin("python").exists():
        print(f"creating virtual environment in {VENV} ...", flush=True)
        venv.EnvBuilder(with_pip=True, clear=True).create(VENV)
    print("installing logserver and its test and bench dependencies (pinned by constraints.txt) ...", flush=True)
    pip = [str(_bin("python")), "-m", "pip", "--disable-pip-version-check", "-q"]
    cmd = pip + ["install", "-e", f"{ROOT}[test,bench]"]
    if (ROOT / "constraints.txt").exists():
        cmd += ["-c", str(ROOT / "constraints.txt")]
    subprocess.run(cmd, check=True, cwd=ROOT)
    STAMP.write_text(want)


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("serve", "test", "bench"):
        print(__doc__.strip())
        return 2
    ensure_venv()
    what, rest = argv[0], argv[1:]
    if what == "serve":
        cmd = [str(_bin("logserver")), "serve", "--dev", *rest]
    elif what == "bench":
        cmd = [str(_bin("python")), "-m", "bench", *rest]
    else:
        return run_tests(rest)
    os.chdir(ROOT)
    # Replace this process, so that a signal sent to it (kill, a supervisor's SIGTERM)
    # reaches the server itself and stops it cleanly instead of orphaning it.
    os.execv(cmd[0], cmd)


# The whole suite (no arguments) also enforces line coverage of the pure Merkle core.
MERKLE_MIN_COVERAGE = 95


def run_tests(args: list[str]) -> int:
    os.chdir(ROOT)
    python = str(_bin("python"))
    whole_suite = not args
    cmd = [python, "-m", "pytest", *args]
    if whole_suite:
        cmd += ["--cov=logserver", "--cov-report="]
    summary = ROOT / ".pytest-summary"
    summary.unlink(missing_ok=True)
    env = dict(os.environ, LOGSERVER_TEST_SUMMARY=str(summary))
    try:
        status = subprocess.call(cmd, env=env)
        if status == 0 and whole_suite:
            print(f"\nlogserver/merkle line coverage (must be >= {MERKLE_MIN_COVERAGE}%):", flush=True)
            status = subprocess.call([python, "-m", "coverage", "report", "--include=*/logserver/merkle/*",
                                      f"--fail-under={MERKLE_MIN_COVERAGE}", "--show-missing"])
    except KeyboardInterrupt:
        return 130
    if summary.exists():
        passed, failed, skipped = summary.read_text().split()
        # Repeated last, so the run's final line states what ran.
        print(f"\ntests: {passed} passed, {failed} failed, {skipped} skipped", flush=True)
        summary.unlink()
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

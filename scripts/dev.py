#!/usr/bin/env python3
"""One-command set-up for newcomers and CI.

    python3 scripts/dev.py serve   # create .venv if needed, then `logserver serve --dev`
    python3 scripts/dev.py test    # create .venv if needed, then run the whole test suite
    python3 scripts/dev.py bench   # create .venv if needed, then run the benchmark suite (bench/)

The virtual environment lives in `.venv` at the top of the checkout, with logserver
installed editable and only what the command needs: `serve` the package alone, `test`
the `test` extra (which includes `bench`: the suite runs the benchmark smoke test),
`bench` the `bench` extra. Extras once installed stay, so `serve` after `test`
installs nothing. It is (re)installed whenever pyproject.toml or constraints.txt
change, so a fresh clone needs nothing but Python 3.11+ and access to PyPI. Extra
arguments are passed on: `python3 scripts/dev.py test -k merkle`,
`... serve --listen 127.0.0.1:9000`, `... bench --full --with-10m` (see bench/README.md).

`test` with no arguments runs the whole suite: first the lint step (ruff's lint and
layout checks on logserver/, tests/, bench/ and scripts/, mypy on logserver/; see
LINT_ENFORCED below), then pytest with the Merkle core's coverage floor.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
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


# What each command needs installed, as extras of pyproject.toml (an extra's own
# `logserver[...]` requirements are followed by _with_included).
COMMAND_EXTRAS: dict[str, tuple[str, ...]] = {"serve": (), "test": ("test",), "bench": ("bench",)}


def _with_included(extras: set[str]) -> set[str]:
    """`extras` and every extra they pull in through `logserver[...]` requirements (the
    `test` extra includes `bench`), so the stamp records what is really installed."""
    import tomllib  # here, so that Python < 3.11 gets ensure_venv's message rather than an ImportError

    optional = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"].get("optional-dependencies", {})
    done: set[str] = set()
    todo = list(extras)
    while todo:
        name = todo.pop()
        if name in done:
            continue
        done.add(name)
        for req in optional.get(name, []):
            m = re.fullmatch(r"logserver\[([\w,\s-]+)\]", req.strip())
            if m:
                todo.extend(e.strip() for e in m.group(1).split(","))
    return done


def _read_stamp() -> tuple[str, set[str]]:
    """(install digest, installed extras) of the last install; ("", set()) if unknown."""
    try:
        stamp = json.loads(STAMP.read_text())
        return str(stamp["digest"]), set(stamp["extras"])
    except (OSError, ValueError, KeyError, TypeError):
        return "", set()


def ensure_venv(command: str) -> None:
    if sys.version_info < (3, 11):  # noqa: UP036 (dev.py runs under any python3: this check tells an old one)
        sys.exit(f"logserver needs Python 3.11 or newer; this is {sys.version.split()[0]}")
    want_digest = _install_digest()
    want = _with_included(set(COMMAND_EXTRAS[command]))
    digest, installed = _read_stamp()
    if not _bin("python").exists():
        installed = set()
    elif digest == want_digest and want <= installed:
        return
    # A changed pyproject.toml or constraints.txt reinstalls every extra already there,
    # so that none of them is left at a version the new pins do not allow.
    extras = sorted(want | installed)
    if not _bin("python").exists():
        print(f"creating virtual environment in {VENV} ...", flush=True)
        venv.EnvBuilder(with_pip=True, clear=True).create(VENV)
    what = f"with the {', '.join(extras)} extras" if extras else "(what serving needs)"
    print(f"installing logserver {what}, pinned by constraints.txt ...", flush=True)
    pip = [str(_bin("python")), "-m", "pip", "--disable-pip-version-check", "-q"]
    target = f"{ROOT}[{','.join(extras)}]" if extras else str(ROOT)
    cmd = [*pip, "install", "-e", target]
    if (ROOT / "constraints.txt").exists():
        cmd += ["-c", str(ROOT / "constraints.txt")]
    subprocess.run(cmd, check=True, cwd=ROOT)
    STAMP.write_text(json.dumps({"digest": want_digest, "extras": extras}) + "\n")


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("serve", "test", "bench"):
        print(__doc__.strip())
        return 2
    what, rest = argv[0], argv[1:]
    ensure_venv(what)
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

# The lint step of the whole suite: ruff's lint rules and ruff's layout rules (pycodestyle's
# E1/E2/E3/W: indentation, whitespace, blank lines; the format check of this code base,
# which is formatted by hand rather than by `ruff format`) on the package, its tests, the
# benchmark and these scripts; mypy on logserver/ only (the package ships py.typed; the
# tests, bench/ and scripts/ are not typed to its standard). Configured in pyproject.toml.
# Any finding fails the run; the tests run either way, so one run reports both
# (CONTRIBUTING.md, "Lint and types").
LINT_ENFORCED = True
LINT_PATHS = ["logserver", "tests", "bench", "scripts"]
LINT_COMMANDS = (
    ("ruff check", ["-m", "ruff", "check", *LINT_PATHS]),
    ("ruff layout check", ["-m", "ruff", "check", "--preview", "--select", "E1,E2,E3,W", *LINT_PATHS]),
    ("mypy", ["-m", "mypy", "logserver"]),
)


def run_lint(python: str) -> int:
    """Every lint command, each reported; 1 if any found something."""
    failed = []
    for name, args in LINT_COMMANDS:
        print(f"lint: {name}", flush=True)
        if subprocess.call([python, *args]) != 0:
            failed.append(name)
    if failed:
        print(f"\nlint failed: {', '.join(failed)} (fix the findings above; see CONTRIBUTING.md)", flush=True)
        return 1
    return 0


# Debian packages the suite's tests of real components need (a test of a real
# component runs; it does not skip): installed when missing, as root, like the venv.
# nginx serves the published tlog-tiles directory (deploy/nginx/logserver.conf,
# tests/static_servers.py); wrk drives the benchmark's smoke test; prometheus and promtool
# check and unit-test the alert rules and scrape a running log (deploy/prometheus/,
# tests/test_prometheus.py); chromium renders the status page headless (GET /,
# tests/test_status_page.py); systemd-analyze verifies the systemd units (deploy/systemd/,
# tests/test_systemd_units.py).
SYSTEM_PACKAGES = {"wrk": "wrk", "nginx": "nginx", "prometheus": "prometheus",
                   "promtool": "prometheus", "chromium": "chromium",
                   "systemd-analyze": "systemd"}  # command -> Debian package

# Where a command is looked for besides PATH: daemons such as nginx install into
# /usr/sbin, which a non-root user's PATH (and some CI shells') does not name.
SBIN_DIRS = ("/usr/local/sbin", "/usr/sbin", "/sbin")

# invoke-rc.d and deb-systemd-invoke, which a package's maintainer scripts call to
# start its service, first ask this program; exit status 101 means "action forbidden"
# (Debian Policy, /usr/share/doc/init-system-helpers/README.policy-rc.d).
POLICY_RC_D = Path("/usr/sbin/policy-rc.d")


def find_command(name: str) -> str | None:
    """The path of command `name`, on PATH or in SBIN_DIRS; None if neither has it."""
    return shutil.which(name) or shutil.which(name, path=os.pathsep.join(SBIN_DIRS))


def _apt_get_install(packages: list[str], env: dict[str, str]) -> None:
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    if subprocess.call(["apt-get", "install", "-y", "-q", *packages], env=env, **quiet) != 0:
        subprocess.call(["apt-get", "update", "-q"], env=env, **quiet)
        subprocess.call(["apt-get", "install", "-y", "-q", *packages], env=env, **quiet)


def install_debian_packages(packages: list[str]) -> None:
    """apt-get install `packages` (as root), starting no service (also used by scripts/container.py)."""
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    # Debian's nginx package starts the system nginx (its default site on port 80) from
    # its postinst, as the prometheus package does its server (port 9090) and the node
    # exporter it recommends (9100). The tests start their own nginx and Prometheus on
    # free 127.0.0.1 ports and need no system ones, so the install runs under a
    # policy-rc.d that forbids starting services, removed again afterwards. A policy-rc.d
    # already there (container images ship one that forbids everything) is left as it
    # is. The services stay enabled for the next boot, as Debian installs them; they
    # would listen on ports 80, 9090 and 9100, no test's port.
    # docker.io (scripts/container.py) is installed the same way: the script starts the
    # daemon it needs itself, and stops it.
    wrote_policy = False
    if not POLICY_RC_D.exists():
        POLICY_RC_D.write_text("#!/bin/sh\n# written by logserver's scripts/dev.py for one apt-get install\nexit 101\n")
        POLICY_RC_D.chmod(0o755)
        wrote_policy = True
    try:
        _apt_get_install(packages, env)
    finally:
        if wrote_policy:
            POLICY_RC_D.unlink(missing_ok=True)


def ensure_system_packages() -> None:
    missing = sorted({pkg for cmd, pkg in SYSTEM_PACKAGES.items() if find_command(cmd) is None})
    if not missing:
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        print(f"note: {', '.join(missing)} missing and not installable here (needs root and apt-get); "
              "the tests that need them will say so", flush=True)
        return
    print(f"installing {', '.join(missing)} from Debian's packages (apt-get) ...", flush=True)
    install_debian_packages(missing)
    still = sorted({pkg for cmd, pkg in SYSTEM_PACKAGES.items() if find_command(cmd) is None})
    if still:
        print(f"note: {', '.join(still)} could not be installed (apt-get failed); "
              "the tests that need them will say so", flush=True)


def run_tests(args: list[str]) -> int:
    os.chdir(ROOT)
    python = str(_bin("python"))
    whole_suite = not args
    # Every run, not only the whole suite's: a targeted run of a real-component test
    # (`test tests/test_static_servers.py`) needs its server too. Nothing to do, and
    # nothing printed, when everything is installed.
    ensure_system_packages()
    cmd = [python, "-m", "pytest", *args]
    if whole_suite:
        cmd += ["--cov=logserver", "--cov-report="]
    summary = ROOT / ".pytest-summary"
    summary.unlink(missing_ok=True)
    env = dict(os.environ, LOGSERVER_TEST_SUMMARY=str(summary))
    lint_status = 0
    try:
        if whole_suite:
            if LINT_ENFORCED or os.environ.get("LOGSERVER_LINT") == "1":
                lint_status = run_lint(python)
            else:
                print("lint: not enforced (LINT_ENFORCED in scripts/dev.py; LOGSERVER_LINT=1 runs it)", flush=True)
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
        if lint_status:
            print("\nlint failed (see above): the run fails whatever the tests did", flush=True)
        print(f"\ntests: {passed} passed, {failed} failed, {skipped} skipped", flush=True)
        summary.unlink()
    return status or lint_status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

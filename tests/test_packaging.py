"""The package installs whole: `pip install .` needs no checkout beside it.

The sdist and the wheel carry every SQL migration and openapi.yaml as real files,
byte-identical to the repository's (in the checkout, logserver/migrations and
logserver/openapi.yaml are symlinks to the top-level ones; CONTRIBUTING.md, "Package
data"), and the wheel, installed into a fresh virtual environment and run from an
empty directory, finds them: `logserver --help` runs, the migrations load, and
`logserver serve --dev` applies them and serves /openapi.yaml.

The build uses this environment's setuptools with no build isolation (the `test` extra
installs it), from a copy of the build's inputs, so nothing is downloaded and the
checkout gets no build/ or *.egg-info. The new environment gets the wheel without its
dependencies; a .pth line lends it this environment's site-packages for those.
"""
from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import venv
import zipfile
from pathlib import Path

import aiohttp
import asyncpg
import pytest

import logserver
from server_harness import free_port, wait_ready

ROOT = Path(__file__).resolve().parent.parent
VERSION = logserver.__version__
# What setuptools reads to build (pyproject.toml names README.md and LICENSE).
BUILD_INPUTS = ("pyproject.toml", "README.md", "LICENSE", "logserver", "migrations", "openapi.yaml")


def _expected_data() -> dict[str, bytes]:
    """Package-relative path -> the repository's bytes, for every file that must ship as data."""
    files = {"openapi.yaml": (ROOT / "openapi.yaml").read_bytes()}
    for path in sorted((ROOT / "migrations").rglob("*.sql")):
        files["migrations/" + path.relative_to(ROOT / "migrations").as_posix()] = path.read_bytes()
    # The status page's files (GET /, logserver/api/status.py).
    for path in sorted((ROOT / "logserver/api/status_page").iterdir()):
        files["api/status_page/" + path.name] = path.read_bytes()
    return files


EXPECTED = _expected_data()


def test_expected_data_is_every_migration():
    # The list the checks below use is complete: the log's and the witness's migrations.
    names = set(EXPECTED)
    assert "migrations/0001_log.sql" in names and "migrations/witness/0001_witness.sql" in names, names
    assert "api/status_page/index.html" in names and "api/status_page/status.js" in names, names
    assert len(names) == 1 + len(list((ROOT / "migrations").rglob("*.sql"))) + 3


def _data_names(names) -> list[str]:
    """The data files among an archive's member names (for failure messages)."""
    return sorted(n for n in names if n.endswith((".sql", ".yaml", "py.typed")))


def _build(hook: str, source: Path, out: Path) -> Path:
    """Run setuptools' PEP 517 hook `hook` in `source`; the file it wrote to `out`."""
    out.mkdir(exist_ok=True)
    proc = subprocess.run(
        [sys.executable, "-c", f"import sys; from setuptools import build_meta as b; print(b.{hook}(sys.argv[1]))",
         str(out)],
        cwd=source, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out / proc.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """(sdist, wheel built from the checkout's inputs, wheel built from the unpacked sdist)."""
    base = tmp_path_factory.mktemp("packaging")
    source = base / "source"
    source.mkdir()
    for name in BUILD_INPUTS:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, source / name, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, source / name)
    sdist = _build("build_sdist", source, base / "dist")
    wheel = _build("build_wheel", source, base / "dist")
    unpacked = base / "from-sdist"
    with tarfile.open(sdist) as tar:
        tar.extractall(unpacked, filter="data")
    wheel_from_sdist = _build("build_wheel", unpacked / f"logserver-{VERSION}", base / "dist-from-sdist")
    return sdist, wheel, wheel_from_sdist


def test_sdist_ships_migrations_and_openapi_as_real_files(built):
    sdist, _, _ = built
    prefix = f"logserver-{VERSION}/"
    with tarfile.open(sdist) as tar:
        members = {m.name: m for m in tar.getmembers()}
        for name, want in EXPECTED.items():
            member = members.get(prefix + "logserver/" + name)
            assert member is not None, f"{name} missing from the sdist; its data: {_data_names(members)}"
            # A regular file, not a symlink or a hard link to another member.
            assert member.isreg() and member.type in (tarfile.REGTYPE, tarfile.AREGTYPE), (name, member.type)
            extracted = tar.extractfile(member)
            assert extracted is not None
            assert extracted.read() == want, f"{name} in the sdist differs from the repository's"
        assert prefix + "LICENSE" in members and prefix + "logserver/py.typed" in members
        assert not [m.name for m in members.values() if m.issym() or m.islnk()]


@pytest.mark.parametrize("which", ["from the checkout", "from the sdist"])
def test_wheel_ships_migrations_openapi_and_license(built, which):
    wheel = built[1] if which == "from the checkout" else built[2]
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        for name, want in EXPECTED.items():
            assert "logserver/" + name in names, f"{name} missing from the wheel; its data: {_data_names(names)}"
            assert zf.read("logserver/" + name) == want, f"{name} in the wheel differs from the repository's"
        assert "logserver/py.typed" in names
        license_path = f"logserver-{VERSION}.dist-info/licenses/LICENSE"
        assert zf.read(license_path) == (ROOT / "LICENSE").read_bytes()
        metadata = zf.read(f"logserver-{VERSION}.dist-info/METADATA").decode()
        assert "License-Expression: Apache-2.0" in metadata, metadata[:2000]
        # Nothing from the checkout beyond the package itself.
        assert {n.split("/")[0] for n in names} == {"logserver", f"logserver-{VERSION}.dist-info"}


@pytest.fixture(scope="module")
def installed(built, tmp_path_factory):
    """A fresh virtual environment with the wheel installed (no checkout on its path)."""
    base = tmp_path_factory.mktemp("installed")
    env_dir = base / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    bindir = env_dir / ("Scripts" if os.name == "nt" else "bin")
    python = bindir / "python"
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "--disable-pip-version-check", "--python", str(python),
         "install", "--no-deps", "--no-index", "-q", str(built[1])],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    # Lend it this environment's dependencies. A plain path line: the .pth files in that
    # directory (this checkout's editable install) are not run, so the wheel's copy is
    # the only logserver it can import.
    lent = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (Path(site) / "_logserver_test_deps.pth").write_text("".join(p + "\n" for p in sorted(lent)))
    empty = base / "cwd"
    empty.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    return bindir, Path(site), empty, env


def test_installed_wheel_runs_and_finds_its_data(installed):
    bindir, site, empty, env = installed
    help_run = subprocess.run([str(bindir / "logserver"), "--help"], cwd=empty, env=env,
                              capture_output=True, text=True, timeout=120)
    assert help_run.returncode == 0, help_run.stdout + help_run.stderr
    assert "serve" in help_run.stdout and "witness" in help_run.stdout, help_run.stdout

    probe = (
        "import hashlib, logserver\n"
        "from logserver.storage.migrate import load_migrations\n"
        "from logserver.witness.store import witness_migrations_dir\n"
        "from logserver.api.ops import openapi_path\n"
        "print(logserver.__file__)\n"
        "print(','.join(m.name for m in load_migrations()))\n"
        "print(','.join(m.name for m in load_migrations(witness_migrations_dir())))\n"
        "print(hashlib.sha256(openapi_path().read_bytes()).hexdigest())\n"
    )
    run = subprocess.run([str(bindir / "python"), "-c", probe], cwd=empty, env=env,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    module_file, log_migrations, witness_migrations, openapi_digest = run.stdout.split()
    assert Path(module_file).resolve().is_relative_to(site.resolve()), module_file
    assert log_migrations.split(",") == sorted(p.name for p in (ROOT / "migrations").glob("*.sql"))
    assert witness_migrations.split(",") == sorted(p.name for p in (ROOT / "migrations/witness").glob("*.sql"))
    assert openapi_digest == hashlib.sha256(EXPECTED["openapi.yaml"]).hexdigest()


async def test_installed_wheel_serves_dev(installed, database_url):
    """`logserver serve --dev` from the wheel, in an empty directory: it migrates a fresh
    database from the packaged SQL, becomes ready and serves the packaged openapi.yaml and
    status page."""
    bindir, _, empty, env = installed
    port = free_port()
    log_path = empty / "serve.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [str(bindir / "logserver"), "serve", "--dev", "--data-dir", "data", "--listen", f"127.0.0.1:{port}"],
            cwd=empty, env=dict(env, DATABASE_URL=database_url), stdout=log, stderr=subprocess.STDOUT,
        )
        try:
            url = f"http://127.0.0.1:{port}"
            await wait_ready(proc, url, log_path.read_text)
            async with aiohttp.ClientSession() as session:
                async with session.get(url + "/openapi.yaml") as resp:
                    assert resp.status == 200
                    served = await resp.read()
                async with session.get(url + "/") as resp:  # the status page, from package data
                    assert resp.status == 200
                    page = await resp.read()
        finally:
            proc.terminate()
            try:
                await asyncio.to_thread(proc.wait, 30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                raise
    assert served == EXPECTED["openapi.yaml"]
    assert page == EXPECTED["api/status_page/index.html"]
    conn = await asyncpg.connect(database_url)
    try:
        applied = [r["name"] for r in await conn.fetch("SELECT name FROM schema_migrations ORDER BY version")]
    finally:
        await conn.close()
    assert applied == sorted(p.name for p in (ROOT / "migrations").glob("*.sql"))

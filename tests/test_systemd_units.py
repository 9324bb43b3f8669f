"""The systemd units of deploy/systemd/ (issue 22 §6; docs/operations.md, "Deploy with
systemd"), checked with systemd's own tools and by running their command lines.

* `systemd-analyze verify` on each unit. The units run /opt/logserver/bin/logserver,
  which verify requires to exist; the test verifies a copy whose `/opt/logserver/bin/`
  is rewritten to this venv's bin directory, nothing else changed. verify exits 0 on an
  unknown key or a bad value (it only warns), so any output fails the test too.
* The hardening the issue asks for is there (a dedicated or dynamic user,
  ProtectSystem=strict, NoNewPrivileges, ReadWritePaths naming the data directory), and
  `systemd-analyze security --offline=yes` rates each unit's exposure at most 2.0 ("OK").
* `systemd-sysusers --root` creates the units' users from logserver.sysusers.conf.
* Each ExecStart command line, with its Environment= values expanded and its /etc and
  /var/lib paths moved to a temporary directory, starts a working log, witness and
  monitor (the monitor verifies the log), and each exits 0 on SIGTERM (KillMode=mixed
  relies on it).

This machine has no systemd as PID 1, so the units themselves are not started here.
"""
from __future__ import annotations

import asyncio
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from aiohttp import ClientSession

import pg
from bundle_factory import BundleFactory
from logserver.keys.log_key import LogKey
from server_harness import ORIGIN, free_port, wait_ready, write_config
from test_client_support import write_trust_policy
from witness_harness import write_witness_config

ROOT = Path(__file__).resolve().parents[1]
UNITS_DIR = ROOT / "deploy" / "systemd"
UNITS = ("logserver.service", "logserver-witness.service", "logserver-monitor.service")
INSTALLED_BIN = "/opt/logserver/bin/"
VENV_BIN = str(Path(sys.executable).parent) + "/"
MAX_EXPOSURE = 2.0


def systemd_tool(name: str) -> str:
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    assert path, f"{name} is not installed: `python3 scripts/dev.py test ...` installs it (Debian package systemd)"
    return path


def directives(unit: Path) -> dict[str, list[str]]:
    """Every `Key=value` of the unit's [Service] section, in order (keys may repeat)."""
    out: dict[str, list[str]] = {}
    section = ""
    for line in unit.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line
        elif section == "[Service]":
            key, _, value = line.partition("=")
            out.setdefault(key, []).append(value)
    return out


def local_copy(unit: str, directory: Path) -> Path:
    """The unit with the installed venv's bin directory replaced by this venv's."""
    text = (UNITS_DIR / unit).read_text()
    assert INSTALLED_BIN + "logserver " in text, f"{unit}: ExecStart does not run {INSTALLED_BIN}logserver"
    copy = directory / unit
    copy.write_text(text.replace(INSTALLED_BIN, VENV_BIN))
    return copy


@pytest.mark.parametrize("unit", UNITS)
def test_systemd_analyze_verify(unit, tmp_path):
    copy = local_copy(unit, tmp_path)
    run = subprocess.run([systemd_tool("systemd-analyze"), "verify", "--man=no", str(copy)],
                         capture_output=True, text=True, timeout=120)
    assert (run.returncode, run.stdout + run.stderr) == (0, ""), run.stdout + run.stderr


def test_verify_reports_a_mistake_as_output(tmp_path):
    # What the test above relies on: a misspelt key is reported (on stderr), not an exit status.
    copy = local_copy("logserver.service", tmp_path)
    copy.write_text(copy.read_text().replace("ProtectSystem=strict", "ProtectSystm=strict"))
    run = subprocess.run([systemd_tool("systemd-analyze"), "verify", "--man=no", str(copy)],
                         capture_output=True, text=True, timeout=120)
    assert "Unknown key" in run.stderr and "ProtectSystm" in run.stderr, run.stderr


@pytest.mark.parametrize("unit", UNITS)
def test_hardening(unit, tmp_path):
    d = directives(UNITS_DIR / unit)
    dynamic = d.get("DynamicUser") == ["yes"]
    assert dynamic or (d.get("User") and d["User"] == d.get("Group")), f"{unit}: no dedicated or dynamic user"
    assert d["ProtectSystem"] == ["strict"] and d["NoNewPrivileges"] == ["yes"]
    # The data directory is the unit's StateDirectory, and writable.
    state = d["StateDirectory"]
    assert len(state) == 1 and d["ReadWritePaths"] == [f"/var/lib/{state[0]}"], (state, d.get("ReadWritePaths"))
    for key in ("ProtectHome", "PrivateTmp", "PrivateDevices", "ProtectKernelTunables", "ProtectKernelModules",
                "ProtectControlGroups", "RestrictNamespaces", "RestrictSUIDSGID", "LockPersonality"):
        assert d.get(key) == ["yes"], f"{unit}: {key}={d.get(key)}"
    assert d["CapabilityBoundingSet"] == [""] and d["RestrictAddressFamilies"] == ["AF_UNIX AF_INET AF_INET6"]

    copy = local_copy(unit, tmp_path)
    run = subprocess.run([systemd_tool("systemd-analyze"), "security", "--offline=yes", "--no-pager",
                          f"--threshold={int(MAX_EXPOSURE * 10)}", str(copy)],
                         capture_output=True, text=True, timeout=120)
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", run.stdout)
    assert m and float(m[1]) <= MAX_EXPOSURE and run.returncode == 0, run.stdout[-3000:] + run.stderr


def test_sysusers_makes_the_units_users(tmp_path):
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    run = subprocess.run([systemd_tool("systemd-sysusers"), f"--root={root}",
                          str(UNITS_DIR / "logserver.sysusers.conf")], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    users = {line.split(":")[0]: line.split(":") for line in (root / "etc/passwd").read_text().splitlines()}
    for unit in UNITS:
        d = directives(UNITS_DIR / unit)
        if "User" in d:
            user = users[d["User"][0]]
            assert 0 < int(user[2]) < 1000 and user[5] == f"/var/lib/{d['StateDirectory'][0]}", user
            assert user[6] in ("/usr/sbin/nologin", "/sbin/nologin", "/bin/false"), user


def command_line(unit: str, paths: dict[str, Path]) -> list[str]:
    """The unit's ExecStart with this venv's logserver, ${VAR}s from its Environment=
    lines, and its /etc and /var/lib paths replaced by `paths`."""
    d = directives(UNITS_DIR / unit)
    env: dict[str, str] = {}
    for line in d.get("Environment", []):
        env.update(item.split("=", 1) for item in shlex.split(line))
    [exec_start] = d["ExecStart"]
    text = re.sub(r"\$\{(\w+)\}", lambda m: env[m[1]], exec_start).replace(INSTALLED_BIN, VENV_BIN)
    argv = shlex.split(text)
    for i, arg in enumerate(argv):
        if arg.startswith(("/etc/", "/var/lib/")):
            assert arg in paths, f"{unit}: {arg} has no stand-in"
            argv[i] = str(paths[arg])
    return argv


async def wait_http(proc: subprocess.Popen, url: str, log: Path) -> None:
    async with ClientSession() as session:
        for _ in range(600):
            assert proc.poll() is None, log.read_text()
            try:
                async with session.get(url) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                pass
            await asyncio.sleep(0.1)
    raise AssertionError(f"{url} did not answer:\n{log.read_text()}")


async def test_exec_start_command_lines_run_and_stop_cleanly(pg_admin_url, database_url, tmp_path):
    log_port, witness_port = free_port(), free_port()
    log_config = write_config(tmp_path / "log", database_url)
    witness_db = await pg.create_database(pg_admin_url, "t_systemd_witness")
    log_vkey = LogKey.load(tmp_path / "log" / "log.key", ORIGIN).vkey
    witness_config = write_witness_config(tmp_path / "witness", "witness.test/systemd", witness_db, [log_vkey])
    witness_config.write_text(witness_config.read_text().replace('listen = "127.0.0.1:0"',
                                                                 f'listen = "127.0.0.1:{witness_port}"'))
    procs: dict[str, subprocess.Popen] = {}
    logs: dict[str, Path] = {}

    def start(unit: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen:
        logs[unit] = tmp_path / f"{unit}.log"
        with logs[unit].open("wb") as out:
            procs[unit] = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=tmp_path)
        return procs[unit]

    base_env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "WITNESS_DATABASE_URL")}
    try:
        log = start("logserver.service", command_line("logserver.service", {
            "/etc/logserver/logserver.toml": log_config}), dict(base_env, LOGSERVER_LISTEN=f"127.0.0.1:{log_port}"))
        witness = start("logserver-witness.service", command_line("logserver-witness.service", {
            "/etc/logserver-witness/witness.toml": witness_config}), base_env)
        log_url = f"http://127.0.0.1:{log_port}"
        await wait_ready(log, log_url, logs["logserver.service"].read_text)
        await wait_http(witness, f"http://127.0.0.1:{witness_port}/readyz", logs["logserver-witness.service"])
        async with ClientSession() as session:
            async with session.post(log_url + "/v1/bundles", data=BundleFactory(fleet_id="systemd").envelope_json(),
                                    headers={"Content-Type": "application/json"}) as resp:
                assert resp.status == 201, await resp.text()
            async with session.get(log_url + "/v1/log") as resp:
                vkey = (await resp.json())["verifier_key"]
        trust = write_trust_policy(tmp_path / "monitor-etc", vkey)
        monitor_argv = command_line("logserver-monitor.service", {
            "/etc/logserver-monitor/trust.toml": trust, "/var/lib/logserver-monitor": tmp_path / "monitor-state"})
        # The unit's defaults name the log at 127.0.0.1:8080 and metrics at 127.0.0.1:9464
        # (monitor.env changes them); here, this test's ports.
        metrics_port = free_port()
        monitor_argv = [a.replace("http://127.0.0.1:8080", log_url).replace("127.0.0.1:9464",
                                                                            f"127.0.0.1:{metrics_port}")
                        for a in monitor_argv]
        assert monitor_argv[1:3] == ["monitor", "--log"]
        monitor = start("logserver-monitor.service", monitor_argv, base_env)
        metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
        await wait_http(monitor, metrics_url, logs["logserver-monitor.service"])
        async with ClientSession() as session:
            for _ in range(600):  # the monitor verifies the log's two leaves (a bundle and its HEADS leaf)
                async with session.get(metrics_url) as resp:
                    text = await resp.text()
                if re.search(r"^logserver_monitor_verified_size [1-9]", text, re.M):
                    break
                await asyncio.sleep(0.1)
            else:
                raise AssertionError(text[-2000:] + logs["logserver-monitor.service"].read_text())
        # KillMode=mixed: SIGTERM to the main process, which must exit 0 by itself.
        for unit in ("logserver-monitor.service", "logserver-witness.service", "logserver.service"):
            procs[unit].send_signal(signal.SIGTERM)
            assert await asyncio.to_thread(procs[unit].wait, 60) == 0, logs[unit].read_text()
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        await pg.drop_database(pg_admin_url, witness_db)

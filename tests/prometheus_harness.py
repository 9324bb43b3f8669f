"""A real Prometheus (Debian's `prometheus` package, installed by scripts/dev.py) for tests:
127.0.0.1, a free port, a temporary TSDB directory, stopped by its pid."""
from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import aiohttp
import yaml

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy" / "prometheus"
ALERTS = DEPLOY / "alerts.yml"
ALERTS_TEST = DEPLOY / "alerts_test.yml"
CONFIG = DEPLOY / "prometheus.yml"
DASHBOARD = REPO / "deploy" / "grafana" / "logserver.json"

INSTALL_HINT = "python3 scripts/dev.py test installs Debian's `prometheus` package (as root)"


def tool(name: str) -> str:
    """The path of `prometheus` or `promtool`; a failure (never a skip) when missing."""
    path = shutil.which(name)
    if path is None:
        raise AssertionError(f"{name} is not installed: {INSTALL_HINT}")
    return path


def promtool(*args: str, cwd: Path = DEPLOY) -> subprocess.CompletedProcess[str]:
    return subprocess.run([tool("promtool"), *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def scrape_config(targets: dict[str, list[str]], *, interval: str = "1s") -> dict[str, Any]:
    """deploy/prometheus/prometheus.yml with each job's targets replaced by `targets` (every
    job of the file must be given one), the rule file by its absolute path, and a short
    scrape and evaluation interval."""
    config = yaml.safe_load(CONFIG.read_text())
    config["global"]["scrape_interval"] = config["global"]["evaluation_interval"] = interval
    config["rule_files"] = [str(DEPLOY / f) for f in config["rule_files"]]
    jobs = {job["job_name"] for job in config["scrape_configs"]}
    if jobs != set(targets):
        raise AssertionError(f"jobs of {CONFIG.name}: got {sorted(jobs)}, the test starts {sorted(targets)}")
    for job in config["scrape_configs"]:
        job["static_configs"] = [{"targets": targets[job["job_name"]]}]
    return config


class Prometheus:
    def __init__(self, directory: Path, config: dict[str, Any], port: int):
        self.directory, self.port = directory, port
        self.config_path = directory / "prometheus.yml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.log_path = directory / "prometheus.log"
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    async def start(self, timeout_s: float = 60.0) -> None:
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen(
                [tool("prometheus"), f"--config.file={self.config_path}",
                 f"--storage.tsdb.path={self.directory / 'tsdb'}",
                 f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
                stdout=out, stderr=subprocess.STDOUT, cwd=self.directory)
        deadline = time.monotonic() + timeout_s
        async with aiohttp.ClientSession() as session:
            while True:
                if self.proc.poll() is not None:
                    raise AssertionError(f"prometheus exited with {self.proc.returncode}:\n{self.output()}")
                try:
                    async with session.get(self.url + "/-/ready") as resp:
                        if resp.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                if time.monotonic() > deadline:
                    raise AssertionError(f"prometheus not ready after {timeout_s}s:\n{self.output()}")
                await asyncio.sleep(0.1)

    def stop(self) -> None:
        """SIGTERM this process (by its pid), then SIGKILL if it does not exit in 20 s."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    async def api(self, session: aiohttp.ClientSession, path: str, **params: str) -> tuple[int, dict[str, Any]]:
        """GET /api/v1/<path>: (HTTP status, the JSON envelope)."""
        async with session.get(f"{self.url}/api/v1/{path}", params=params) as resp:
            return resp.status, await resp.json()

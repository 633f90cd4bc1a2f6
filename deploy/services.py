"""Private Redis and PostgreSQL servers a fault test or the soak may stop and start at will.

Never the shared servers other tests and engineers use: each is started here
on a free port in a temporary directory, from the machine's own binaries
(Debian's redis-server, and PostgreSQL's initdb/pg_ctl that come with the
PostgreSQL server CI runs on). Used by tests/deploy/test_faults.py and
bench/soak.py.
"""

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg
import redis

from deploy.cluster import free_port

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
PG_BIN = Path(os.environ.get("CP_PG_BIN", "/usr/lib/postgresql/15/bin"))


def have_private_redis() -> bool:
    return Path(REDIS_SERVER).exists()


def have_private_postgres() -> bool:
    return (PG_BIN / "initdb").exists() and (PG_BIN / "pg_ctl").exists()


class PrivateRedis:
    """redis-server without persistence: a restart forgets every key, groups included."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.directory)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        client = redis.Redis(port=self.port, socket_timeout=1)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                return
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None


class PrivatePostgres:
    """A PostgreSQL cluster of its own (initdb in a temp dir), trust auth on 127.0.0.1."""

    def __init__(self) -> None:
        # Not under pytest's tmp_path: run as root, the postgres user cannot enter it.
        self.directory = Path(tempfile.mkdtemp(prefix="cpweb-pg-"))
        self.data = self.directory / "data"
        self.port = free_port()

    @property
    def url(self) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *command: str) -> None:
        # initdb and postgres refuse to run as root: run them as the postgres user then.
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        done = subprocess.run([*prefix, *command], capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"{command[0]} failed:\n{done.stdout}{done.stderr}")

    def init(self) -> None:
        if os.geteuid() == 0:
            shutil.chown(self.directory, "postgres")
        self._run(str(PG_BIN / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres",
                  "--no-sync")  # fmt: skip

    def start(self) -> None:
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.directory} -c fsync=off"
        self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l",
                  str(self.directory / "postgres.log"), "-o", options, "-w", "start")  # fmt: skip
        deadline = time.monotonic() + 30
        while True:
            try:
                psycopg.connect(self.url, connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def stop(self) -> None:
        self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")

    def remove(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)

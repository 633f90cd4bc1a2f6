"""A real cpweb: migrated, demo directory loaded, daphne on a free port.

Its channel webhooks are configured with the secrets below, and Sinch's REST
API is a local HTTP server of the test process (tests/fake_sinch.py).

The server runs on what the suite runs on: a SQLite file and the in-memory
channel layer by default; with DATABASE_URL=postgres://… a fresh database of
its own on that server, and with REDIS_URL the Redis layer under a prefix of
its own.
"""

import os
import socket
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.crm_standin import SECRET as CRM_SECRET
from tests.crm_standin import CrmStandIn, start_crm
from tests.fake_sinch import FakeSinch, start_fake_sinch

ROOT = Path(__file__).resolve().parents[2]
OUTPUT = Path(os.environ.get("CPWEB_TEST_OUTPUT", ROOT / "test-results"))
API_TOKEN = "e2e-api-token"
IDENTITY_SECRET = "e2e-identity-secret"
ADMIN = ("admin", "cpweb-admin-demo")
AGENT = ("agent", "cpweb-agent-demo")
SINCH_WEBHOOK_SECRET = "e2e-sinch-webhook-secret"
SINCH_VOICE_KEY = "e2e-voice-app"
SINCH_VOICE_SECRET = "ZTJlLXZvaWNlLXNlY3JldA=="
EMAIL_TOKEN = "e2e-email-token"
METRICS_TOKEN = "e2e-metrics-token"


@dataclass
class Server:
    base_url: str
    env: dict[str, str]
    log: Path

    @property
    def ws_url(self) -> str:
        return self.base_url.replace("http://", "ws://")

    @property
    def origin(self) -> str:
        return self.base_url

    def manage(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=120, check=True,
        )  # fmt: skip

    def add_contact_in_admin(self, name: str, email: str, country: str) -> None:
        """Add a contact with one email through the real admin form, as an admin would."""
        admin = self.login(ADMIN)
        add = "/admin/directory/contact/add/"
        admin.get(add)
        response = admin.post(
            add,
            data={
                "csrfmiddlewaretoken": admin.cookies["csrftoken"],
                "name": name, "company": "", "country": country, "external_id": "",
                "emails-TOTAL_FORMS": "1", "emails-INITIAL_FORMS": "0", "emails-0-value": email,
                "phones-TOTAL_FORMS": "0", "phones-INITIAL_FORMS": "0",
                "chat_ids-TOTAL_FORMS": "0", "chat_ids-INITIAL_FORMS": "0",
            },
        )  # fmt: skip
        assert response.status_code == 302, response.text[:2000]

    def login(self, credentials: tuple[str, str]) -> httpx.Client:
        """An HTTP client signed in through the real login page."""
        client = httpx.Client(base_url=self.base_url, follow_redirects=False, timeout=10)
        client.get("/accounts/login/")
        response = client.post(
            "/accounts/login/",
            data={
                "username": credentials[0],
                "password": credentials[1],
                "csrfmiddlewaretoken": client.cookies["csrftoken"],
                "next": "/console/",
            },
        )
        assert response.status_code == 302, response.text[:500]
        return client

    def session_cookie(self, credentials: tuple[str, str]) -> str:
        client = self.login(credentials)
        return f"sessionid={client.cookies['sessionid']}"

    def query(self, sql: str, *params: object) -> list[tuple]:
        """Rows from the server's own database (``?`` placeholders): what it really stored."""
        url = self.env.get("DATABASE_URL", "")
        if url.startswith("postgres"):
            with psycopg.connect(url) as connection:
                return connection.execute(sql.replace("?", "%s"), params).fetchall()
        with closing(sqlite3.connect(Path(self.env["CPWEB_VAR_DIR"]) / "cpweb.sqlite3")) as db:
            return db.execute(sql, params).fetchall()

    def count(self, table: str, where: str, *params: object) -> int:
        return self.query(f"SELECT COUNT(*) FROM {table} WHERE {where}", *params)[0][0]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _postgres_database(url: str) -> tuple[str, str]:
    """A fresh database beside the one in ``url``: (its URL, its name)."""
    name = f"cpweb_e2e_{uuid.uuid4().hex[:8]}"
    base, _, _ = url.rpartition("/")
    with psycopg.connect(f"{base}/postgres", autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    return f"{base}/{name}", name


def _drop_postgres_database(url: str, name: str) -> None:
    base, _, _ = url.rpartition("/")
    with psycopg.connect(f"{base}/postgres", autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def sinch_api() -> FakeSinch:
    fake, http_server = start_fake_sinch()
    yield fake
    http_server.shutdown()


@contextmanager
def prepared_environment(var: Path, port: int, extra_env: dict[str, str]) -> Iterator[Server]:
    """Settings, a migrated database of its own and the demo directory, for a cpweb on ``port``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "DJANGO_SETTINGS"))}
    env |= {
        "CPWEB_VAR_DIR": str(var),
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
        "CP_API_TOKEN": API_TOKEN,
        "CP_METRICS_TOKEN": METRICS_TOKEN,
        "WEBCHAT_IDENTITY_SECRET": IDENTITY_SECRET,
        "CP_CHANNEL_PREFIX": f"cpweb-e2e-{port}",
        "PYTHONUNBUFFERED": "1",
        # Every test visitor comes from 127.0.0.1; tests/e2e/test_limits.py
        # runs a server of its own with the per-address limits on.
        "CP_WEBCHAT_STARTS_PER_MINUTE": "0",
        "CP_WS_MAX_SOCKETS_PER_ADDRESS": "0",
        **extra_env,
    }
    database = None
    if env.get("DATABASE_URL", "").startswith("postgres"):
        env["DATABASE_URL"], name = _postgres_database(env["DATABASE_URL"])
        database = (env["DATABASE_URL"], name)
    else:
        env.pop("DATABASE_URL", None)
    base_url = f"http://127.0.0.1:{port}"
    instance = Server(base_url=base_url, env=env, log=var / "daphne.log")
    try:
        instance.manage("migrate", "--noinput")
        instance.manage("collectstatic", "--noinput")
        instance.manage("demo_setup", "--base-url", base_url)
        yield instance
    finally:
        if database:
            _drop_postgres_database(*database)


@contextmanager
def running_server(var: Path, extra_env: dict[str, str]) -> Iterator[Server]:
    """A prepared cpweb served by daphne on a free port."""
    port = _free_port()
    with prepared_environment(var, port, extra_env) as instance:
        log = instance.log.open("w")
        daphne = subprocess.Popen(
            [str(Path(sys.executable).with_name("daphne")), "-b", "127.0.0.1", "-p", str(port),
             "cpweb.asgi:application"],
            cwd=ROOT, env=instance.env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    response = httpx.get(f"{instance.base_url}/accounts/login/", timeout=1)
                    if response.status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if daphne.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"daphne did not start:\n{instance.log.read_text()}")
                time.sleep(0.2)
            yield instance
        finally:
            daphne.terminate()
            daphne.wait(timeout=10)
            log.close()


@pytest.fixture(scope="session")
def server(tmp_path_factory, sinch_api) -> Server:
    webhooks = {
        "SINCH_CONVERSATION_WEBHOOK_SECRET": SINCH_WEBHOOK_SECRET,
        "SINCH_VOICE_APP_KEY": SINCH_VOICE_KEY,
        "SINCH_VOICE_APP_SECRET": SINCH_VOICE_SECRET,
        "EMAIL_INBOUND_TOKEN": EMAIL_TOKEN,
        **sinch_api.settings_env(),
    }
    with running_server(tmp_path_factory.mktemp("cpweb-e2e"), webhooks) as instance:
        yield instance


@pytest.fixture(scope="session")
def crm() -> CrmStandIn:
    """The CRM: its webhook endpoint, and the page that frames the console."""
    standin = start_crm()
    yield standin
    standin.stop()


def crm_env(crm: CrmStandIn, **more: str) -> dict[str, str]:
    return {
        "CP_MODE": "crm",
        "CRM_WEBHOOK_URL": crm.url,
        "CRM_WEBHOOK_SECRET": CRM_SECRET,
        "CRM_ORIGIN": crm.origin,
        "CRM_SCREENPOP_URL": "https://crm.example/search?{kind}={value}",
        "CRM_WEBHOOK_TIMEOUT": "1",
        "CRM_RETRY_BASE_SECONDS": "0.1",
        "CRM_RETRY_MAX_SECONDS": "0.5",
        **more,
    }


@pytest.fixture(scope="session")
def crm_server(tmp_path_factory, crm) -> Server:
    """cpweb in CRM mode, its webhook worker inside daphne (as `make run` runs it)."""
    with running_server(tmp_path_factory.mktemp("cpweb-e2e-crm"), crm_env(crm)) as instance:
        yield instance

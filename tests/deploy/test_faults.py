"""Faults with real processes: Redis and PostgreSQL restarted under a running cluster.

Each test runs its own cluster on a private Redis or PostgreSQL
(deploy/services.py) that it stops and starts; the shared servers are
never touched. A daphne worker killed mid-traffic is in test_cross_process.py.
"""

import asyncio
import contextlib
import os

import httpx
import psycopg
import pytest
from websockets.asyncio.client import connect

from deploy.cluster import DEMO_API_TOKEN, Cluster
from deploy.services import (
    PrivatePostgres,
    PrivateRedis,
    have_private_postgres,
    have_private_redis,
)
from tests.deploy.conftest import TRAFFIC_LIMITS, Sockets, start_chat
from tests.e2e.test_webchat import _identified

ON_POSTGRES = os.environ.get("DATABASE_URL", "").startswith("postgres")
ON_REDIS = bool(os.environ.get("REDIS_URL"))


def _message(conversation_id: str, text: str):
    return lambda f: (
        f["type"] == "message"
        and f["conversation_id"] == conversation_id
        and f["message"]["text"] == text
    )


@pytest.mark.skipif(
    not (ON_POSTGRES and have_private_redis()),
    reason="needs DATABASE_URL=postgres://… and redis-server",
)
async def test_a_redis_restart_mid_traffic_loses_no_acked_message(tmp_path):
    """Lost: nothing. Redis restarts empty (no persistence: channel queues and the
    hub group are gone). Messages and replies sent while it is down are acked
    (they are stored in PostgreSQL); once it is back the hubs join again, the
    console gets a fresh snapshot holding the chat started during the outage and
    every acked message in the history, the visitor gets the reply it missed,
    and live pushes flow again both ways."""
    redis_server = PrivateRedis(tmp_path)
    redis_server.start()
    env = {**TRAFFIC_LIMITS, "REDIS_URL": redis_server.url}
    try:
        with Cluster(workers=2, fresh_database=True, env=env) as cluster:
            sockets = Sockets(cluster)
            try:
                await _redis_restart(cluster, sockets, redis_server)
            finally:
                await sockets.close()
    finally:
        redis_server.stop()


async def _redis_restart(cluster: Cluster, sockets: Sockets, redis_server: PrivateRedis):
    worker_a, worker_b = cluster.workers
    console, _ = await sockets.console(worker_b.url)
    visitor = await sockets.visitor(worker_a.url)
    started = await start_chat(visitor, "Anna.Svensson@NordicBikes.se")
    conversation_id = started["conversation_id"]
    await console.receive_until(_identified(conversation_id))
    await console.send({"type": "watch", "conversation_id": conversation_id})
    await visitor.send({"type": "message", "text": "before", "client_msg_id": "b"})
    acked = [(await visitor.receive())["message_id"]]
    await console.receive_until(_message(conversation_id, "before"))

    redis_server.stop()
    for n in range(3):
        await visitor.send({"type": "message", "text": f"during {n}", "client_msg_id": f"d{n}"})
        ack = await visitor.receive(timeout=15)
        assert ack["type"] == "ack", ack
        acked.append(ack["message_id"])
    await console.send(
        {"type": "reply", "conversation_id": conversation_id, "text": "reply during",
         "client_msg_id": "r"}
    )  # fmt: skip
    reply_ack = await console.receive_until(lambda f: f["type"] == "ack", timeout=15)
    newcomer = await sockets.visitor(worker_a.url)
    during = await start_chat(newcomer, "outage.visitor@example.com")
    # A visitor who leaves during the outage is told the chat ended (its own
    # "end" is answered directly, not through the channel layer).
    leaver = await sockets.visitor(worker_a.url)
    left = await start_chat(leaver, "leaving.visitor@example.com")
    await leaver.send({"type": "end"})
    assert (await leaver.receive(timeout=15))["type"] == "ended"
    redis_server.start()

    # The console resyncs: a snapshot with the chat started during the outage...
    snapshot = await console.receive_until(lambda f: f["type"] == "snapshot", timeout=30)
    assert during["conversation_id"] in [c["id"] for c in snapshot["conversations"]]
    assert left["conversation_id"] not in [c["id"] for c in snapshot["conversations"]]
    # ...and, watching again, every acked message.
    await console.send({"type": "watch", "conversation_id": conversation_id})
    history = []
    while len(history) < len(acked) + 1:
        frame = await console.receive_until(lambda f: f["type"] == "message", timeout=10)
        history.append(frame["message"]["message_id"])
    assert sorted(history) == sorted([*acked, reply_ack["message_id"]])
    # The visitor gets the reply sent while Redis was down.
    missed = await visitor.receive_until(lambda f: f["type"] == "message", timeout=30)
    assert (missed["text"], missed["message_id"]) == ("reply during", reply_ack["message_id"])

    # Live again, both ways, and new chats reach the console.
    await visitor.send({"type": "message", "text": "after", "client_msg_id": "a"})
    assert (await visitor.receive(timeout=10))["type"] == "ack"
    await console.receive_until(_message(conversation_id, "after"), timeout=10)
    await console.send(
        {"type": "reply", "conversation_id": conversation_id, "text": "welcome back"}
    )
    back = await visitor.receive_until(lambda f: f["type"] == "message", timeout=10)
    assert back["text"] == "welcome back"
    later = await start_chat(await sockets.visitor(worker_a.url), "after.outage@example.com")
    await console.receive_until(_identified(later["conversation_id"]), timeout=10)


@pytest.mark.skipif(
    not (ON_POSTGRES and ON_REDIS and have_private_postgres()),
    reason="needs DATABASE_URL=postgres://…, REDIS_URL and PostgreSQL's initdb/pg_ctl",
)
async def test_a_postgresql_restart_fails_requests_cleanly_and_recovers():
    """Lost: nothing. While PostgreSQL is down a message and a reply are refused
    with a retryable ``unavailable`` error frame (never acked, so the client
    keeps them), the sockets stay open, HTTP answers 503 with Retry-After, and
    no worker crashes. Once it is back, the resent message is stored once and
    pushed, the reply reaches the visitor, and HTTP answers again."""
    database = PrivatePostgres()
    database.init()
    database.start()
    env = {**TRAFFIC_LIMITS, "DATABASE_URL": database.url}
    try:
        with Cluster(workers=2, fresh_database=True, env=env) as cluster:
            sockets = Sockets(cluster)
            try:
                await _postgres_restart(cluster, sockets, database)
            finally:
                await sockets.close()
    finally:
        with contextlib.suppress(RuntimeError):  # already stopped if the test failed midway
            database.stop()
        database.remove()


async def _until_acked(client, frame: dict, timeout: float = 30) -> dict:
    """Send ``frame`` until it is acked, as the widget and the console page do."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        await client.send(frame)
        answer = await client.receive_until(lambda f: f["type"] in ("ack", "error"), timeout=10)
        if answer["type"] == "ack":
            return answer
        assert answer["code"] == "unavailable", answer
        assert asyncio.get_running_loop().time() < deadline, "never recovered"
        await asyncio.sleep(0.5)


async def _postgres_restart(cluster: Cluster, sockets: Sockets, database: PrivatePostgres):
    worker_a, worker_b = cluster.workers
    console, _ = await sockets.console(worker_b.url)
    visitor = await sockets.visitor(worker_a.url)
    started = await start_chat(visitor, "Anna.Svensson@NordicBikes.se")
    conversation_id = started["conversation_id"]
    await console.receive_until(_identified(conversation_id))
    await console.send({"type": "watch", "conversation_id": conversation_id})
    await visitor.send({"type": "message", "text": "before", "client_msg_id": "b"})
    assert (await visitor.receive())["type"] == "ack"
    await console.receive_until(_message(conversation_id, "before"))
    api = httpx.AsyncClient(
        base_url=cluster.url, timeout=10, headers={"Authorization": f"Bearer {DEMO_API_TOKEN}"}
    )
    identify = {"channel": "webchat", "identifier": "anna.svensson@nordicbikes.se"}

    database.stop()
    message = {"type": "message", "text": "during", "client_msg_id": "d"}
    await visitor.send(message)
    refused = await visitor.receive(timeout=15)
    assert (refused["type"], refused["code"], refused["client_msg_id"]) == (
        "error", "unavailable", "d"
    )  # fmt: skip
    reply = {
        "type": "reply",
        "conversation_id": conversation_id,
        "text": "reply",
        "client_msg_id": "r",
    }
    await console.send(reply)
    refused = await console.receive_until(lambda f: f["type"] == "error", timeout=15)
    assert refused["code"] == "unavailable"
    response = await api.post("/api/identify", json=identify)
    assert response.status_code == 503, response.text
    assert response.json()["error"] == "unavailable"
    assert response.headers["Retry-After"]
    assert (await api.get("/healthz")).status_code == 503
    late = await connect(
        f"{worker_b.ws_url}/ws/console/",
        origin=worker_b.url,
        additional_headers={"Cookie": sockets.agent_cookie()},
    )
    await late.wait_closed()
    assert late.close_code == 4503  # try again later

    database.start()
    ack = await _until_acked(visitor, message)
    seen = await console.receive_until(_message(conversation_id, "during"), timeout=10)
    assert seen["message"]["message_id"] == ack["message_id"]
    reply_ack = await _until_acked(console, reply)
    answer = await visitor.receive_until(lambda f: f["type"] == "message", timeout=10)
    assert answer["message_id"] == reply_ack["message_id"]
    response = await api.post("/api/identify", json=identify)
    assert response.status_code == 200, response.text
    assert response.json()["display_name"] == "Anna Maria Svensson"
    await api.aclose()
    assert all(worker.running() for worker in cluster.workers)
    with psycopg.connect(cluster.database_url) as connection:
        stored = connection.execute(
            "SELECT COUNT(*) FROM chat_message WHERE text IN ('during', 'reply')"
        ).fetchone()
    assert stored == (2,)

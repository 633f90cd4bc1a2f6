"""SPEC §3 and §4 across processes: a visitor on one daphne worker, a console on another.

Three real daphne workers share a real PostgreSQL database and a real Redis
(tests/deploy/conftest.py); nginx is in front of them. Workers are reached
directly where the test needs to say which worker serves whom.
"""

from tests.deploy.conftest import needs_services, server_at, start_chat, visitor_sockets_opened
from tests.e2e.test_webchat import _identified

pytestmark = needs_services


def _message(conversation_id: str, text: str):
    return lambda f: (
        f["type"] == "message"
        and f["conversation_id"] == conversation_id
        and f["message"]["text"] == text
    )


async def test_a_visitor_on_one_worker_talks_with_a_console_on_another(cluster, sockets):
    worker_a, worker_b = cluster.workers[0], cluster.workers[1]
    console, _ = await sockets.console(worker_b.url)
    visitor = await sockets.visitor(worker_a.url)

    started = await start_chat(visitor, "Anna.Svensson@NordicBikes.se")
    conversation_id = started["conversation_id"]
    frame = await console.receive_until(_identified(conversation_id))
    assert frame["conversation"]["identity"]["display_name"] == "Anna Maria Svensson"

    await console.send({"type": "watch", "conversation_id": conversation_id})
    await visitor.send(
        {"type": "message", "text": "My bike's brakes squeak", "client_msg_id": "v1"}
    )
    ack = await visitor.receive()
    assert ack["type"] == "ack"
    seen = await console.receive_until(_message(conversation_id, "My bike's brakes squeak"))
    assert seen["message"]["message_id"] == ack["message_id"]
    assert seen["message"]["sender"] == "visitor"

    await console.send(
        {
            "type": "reply",
            "conversation_id": conversation_id,
            "text": "Bring it in",
            "client_msg_id": "a1",
        }
    )
    reply_ack = await console.receive_until(lambda f: f["type"] == "ack")
    reply = await visitor.receive()
    assert (reply["type"], reply["sender"], reply["text"]) == ("message", "agent", "Bring it in")
    assert reply["message_id"] == reply_ack["message_id"]


async def test_a_visitor_resumes_on_a_different_worker_and_misses_nothing(cluster, sockets):
    worker_a, worker_b, worker_c = cluster.workers
    console, _ = await sockets.console(worker_b.url)
    visitor = await sockets.visitor(worker_a.url)
    started = await start_chat(visitor, "hugo.lefevre@example.fr")
    conversation_id = started["conversation_id"]
    await console.send({"type": "watch", "conversation_id": conversation_id})
    acked = []
    for n in range(3):
        await visitor.send({"type": "message", "text": f"question {n}", "client_msg_id": f"q{n}"})
        acked.append((await visitor.receive())["message_id"])
    visitor.socket.transport.abort()  # the connection drops without a closing handshake

    for text in ("Hello Hugo", "How can we help?"):
        await console.send({"type": "reply", "conversation_id": conversation_id, "text": text})
        await console.receive_until(lambda f: f["type"] == "ack")

    again = await sockets.visitor(worker_c.url)
    await again.send({"type": "resume", "token": started["token"], "after": acked[-1]})
    resumed = await again.receive()
    assert (resumed["type"], resumed["conversation_id"]) == ("started", conversation_id)
    assert [(await again.receive())["text"] for _ in range(2)] == ["Hello Hugo", "How can we help?"]

    # Live again, both ways, now through worker C.
    await again.send({"type": "message", "text": "Back again", "client_msg_id": "q3"})
    assert (await again.receive())["type"] == "ack"
    await console.receive_until(_message(conversation_id, "Back again"))
    await console.send(
        {"type": "reply", "conversation_id": conversation_id, "text": "Welcome back"}
    )
    assert (await again.receive())["text"] == "Welcome back"


async def test_an_admin_edit_served_by_a_third_worker_updates_the_console(cluster, sockets):
    worker_a, worker_b, worker_c = cluster.workers
    console, _ = await sockets.console(worker_b.url)
    started = await start_chat(await sockets.visitor(worker_a.url), "walk.in@example.net")
    conversation_id = started["conversation_id"]
    first = await console.receive_until(_identified(conversation_id))
    assert first["conversation"]["identity"]["status"] == "unmatched"

    server_at(cluster, worker_c.url).add_contact_in_admin("Walter Inn", "Walk.In@example.net", "GB")
    updated = await console.receive_until(_identified(conversation_id, "updated"), timeout=10)
    assert updated["conversation"]["identity"]["display_name"] == "Walter Inn"
    assert updated["conversation"]["identity"]["status"] == "matched"


async def test_through_nginx_chats_spread_over_the_workers_and_all_reach_the_console(
    cluster, sockets
):
    console, _ = await sockets.console(cluster.url)
    before = [visitor_sockets_opened(w) for w in cluster.workers]
    visitors = [await sockets.visitor(cluster.url) for _ in range(6)]
    # least_conn spreads six open sockets over the three workers.
    gained = [visitor_sockets_opened(w) - n for w, n in zip(cluster.workers, before, strict=True)]
    assert all(count >= 1 for count in gained), gained
    emails = [f"nginx.{n}@example.com" for n in range(6)]
    started = [await start_chat(v, e) for v, e in zip(visitors, emails, strict=True)]
    for chat, email in zip(started, emails, strict=True):
        frame = await console.receive_until(_identified(chat["conversation_id"]))
        assert frame["conversation"]["identity"]["display_name"] == email
    await console.send({"type": "watch", "conversation_id": started[0]["conversation_id"]})
    await visitors[0].send({"type": "message", "text": "via nginx", "client_msg_id": "n1"})
    assert (await visitors[0].receive())["type"] == "ack"
    await console.receive_until(_message(started[0]["conversation_id"], "via nginx"))


async def test_a_worker_killed_mid_traffic_loses_nothing_that_was_acked(cluster, sockets):
    """Lost: nothing. Every message acked before the SIGKILL is in the replay the visitor
    gets on another worker and in the history a reconnected console gets; the ones whose
    ack never came are sent again under their client ids and stored once."""
    doomed, survivor, spare = cluster.workers
    watcher, _ = await sockets.console(survivor.url)
    console_on_doomed, _ = await sockets.console(doomed.url)
    visitor = await sockets.visitor(doomed.url)
    started = await start_chat(visitor, "amelia.clarke@example.co.uk")
    conversation_id = started["conversation_id"]
    await watcher.send({"type": "watch", "conversation_id": conversation_id})
    await console_on_doomed.send(
        {
            "type": "reply",
            "conversation_id": conversation_id,
            "text": "Agent here",
            "client_msg_id": "r",
        }
    )
    reply_id = (await console_on_doomed.receive_until(lambda f: f["type"] == "ack"))["message_id"]

    texts = {f"m{n}": f"message {n}" for n in range(40)}
    for client_msg_id, text in texts.items():
        await visitor.send({"type": "message", "text": text, "client_msg_id": client_msg_id})
    acked: dict[str, int] = {}
    try:
        while True:
            frame = await visitor.receive(timeout=10)
            if frame["type"] == "ack":
                acked[frame["client_msg_id"]] = frame["message_id"]
                if len(acked) == 10:
                    cluster.kill_worker(doomed.index)
    except Exception:  # the socket dies with its worker  # noqa: S110
        pass
    try:
        assert 10 <= len(acked) < len(texts), "the kill came mid-traffic"

        # The visitor resumes on another worker: the agent's reply and every acked message.
        again = await sockets.visitor(spare.url)
        await again.send({"type": "resume", "token": started["token"], "after": 0})
        assert (await again.receive())["type"] == "started"
        replayed = {}
        while len(replayed) < len(acked) + 1:
            frame = await again.receive()
            replayed[frame["message_id"]] = frame["text"]
        assert replayed[reply_id] == "Agent here"
        for client_msg_id, message_id in acked.items():
            assert replayed[message_id] == texts[client_msg_id]
        # What was never acked is sent again; what was, if resent, is stored once.
        for client_msg_id, text in texts.items():
            await again.send({"type": "message", "text": text, "client_msg_id": client_msg_id})
            ack = await again.receive_until(lambda f: f["type"] == "ack")
            if client_msg_id in acked:
                assert ack["message_id"] == acked[client_msg_id]

        # The console that was on the dead worker reconnects elsewhere: its snapshot holds
        # the conversation, and the history every message once.
        console, snapshot = await sockets.console(spare.url)
        assert conversation_id in [c["id"] for c in snapshot["conversations"]]
        await console.send({"type": "watch", "conversation_id": conversation_id})
        history = [await console.receive() for _ in range(len(texts) + 1)]
        assert sorted(f["message"]["text"] for f in history) == sorted(
            [*texts.values(), "Agent here"]
        )
        server = server_at(cluster, spare.url)
        assert (
            server.count("chat_message", "conversation_id = ?", conversation_id) == len(texts) + 1
        )
        # The console that stayed on a live worker saw every message live, once.
        seen = set()
        while len(seen) < len(texts):
            frame = await watcher.receive_until(
                lambda f: f["type"] == "message" and f["message"]["sender"] == "visitor"
            )
            assert frame["message"]["text"] not in seen
            seen.add(frame["message"]["text"])
    finally:
        cluster.start_worker(doomed.index)

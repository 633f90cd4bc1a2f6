"""CRM-integrated mode end to end: a real daphne in CP_MODE=crm, a console
websocket, and the CRM's webhook endpoint as a real local HTTP server.

The webhook worker runs inside daphne (CRM_DELIVERY_WORKER=inprocess), except
in the restart test, where `manage.py crm_deliver` processes are killed and
started again.
"""

import asyncio
import json
import re
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest
from websockets.asyncio.client import connect

from tests.crm_standin import free_port, start_crm
from tests.e2e.conftest import AGENT, ROOT, crm_env, prepared_environment

AMELIA = "amelia.clarke@example.co.uk"  # in the demo directory


class Console:
    def __init__(self, socket) -> None:
        self.socket = socket

    async def receive_until(self, predicate, timeout: float = 15) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            remaining = max(0.01, deadline - time.monotonic())
            frame = json.loads(await asyncio.wait_for(self.socket.recv(), remaining))
            if predicate(frame):
                return frame

    async def event(self, event: str, conversation_id: str, **identity) -> dict:
        def wanted(frame: dict) -> bool:
            return (
                frame.get("type") == "conversation"
                and frame["event"] == event
                and frame["conversation"]["id"] == conversation_id
                and all(frame["conversation"]["identity"].get(k) == v for k, v in identity.items())
            )

        return (await self.receive_until(wanted))["conversation"]


@pytest.fixture
async def console_and_visitor(crm_server):
    cookie = crm_server.session_cookie(AGENT)
    console_socket = await connect(
        f"{crm_server.ws_url}/ws/console/",
        origin=crm_server.origin,
        additional_headers={"Cookie": cookie},
    )
    visitor_socket = await connect(f"{crm_server.ws_url}/ws/chat/", origin=crm_server.origin)
    snapshot = json.loads(await console_socket.recv())
    assert snapshot["type"] == "snapshot"
    yield Console(console_socket), visitor_socket
    await console_socket.close()
    await visitor_socket.close()


async def _start_chat(visitor, email: str) -> str:
    await visitor.send(json.dumps({"type": "start", "email": email}))
    started = json.loads(await visitor.recv())
    assert started["type"] == "started", started
    return started["conversation_id"]


async def test_every_console_event_carries_the_crm_block_and_the_crms_answer_is_pushed(
    crm, console_and_visitor
):
    console, visitor = console_and_visitor
    conversation_id = await _start_chat(visitor, AMELIA)
    handoff = {"kind": "email", "value": AMELIA}
    for event in ("started", "identified"):
        conversation = await console.event(event, conversation_id)
        assert conversation["identity"]["crm"] == handoff
        assert conversation["identity"]["name_source"] == "directory"

    updated = await console.event("updated", conversation_id, name_source="crm")
    assert updated["identity"]["display_name"] == f"CRM customer {AMELIA}"
    assert updated["identity"]["crm"] == handoff | {"record_url": f"https://crm.example/r/{AMELIA}"}
    [webhook] = [r for r in crm.acknowledged() if r.body["conversation"]["id"] == conversation_id]
    assert webhook.signature_ok
    assert webhook.event == "identified"
    assert webhook.body["identity"]["contact"]["name"] == "Amelia Clarke"

    await visitor.send(json.dumps({"type": "end"}))
    ended = await console.event("ended", conversation_id)
    assert ended["identity"]["crm"]["value"] == AMELIA
    assert ended["identity"]["name_source"] == "crm"


async def test_the_crm_down_for_a_while_still_gets_the_hand_off_and_its_answer_shows(
    crm, console_and_visitor
):
    console, visitor = console_and_visitor
    crm.stop()
    try:
        conversation_id = await _start_chat(visitor, "newcomer@example.org")
        await console.event("identified", conversation_id, name_source="identifier")
        await asyncio.sleep(1.5)  # connection refused, several times
        crm.fail(2, status=503)
    finally:
        crm.start()
    updated = await console.event("updated", conversation_id, name_source="crm")
    assert updated["identity"]["display_name"] == "CRM customer newcomer@example.org"
    attempts = [r for r in crm.received if r.body["conversation"]["id"] == conversation_id]
    assert [r.status for r in attempts] == [503, 503, 200]
    assert len({r.event_id for r in attempts}) == 1


def test_only_the_crm_may_frame_the_console_and_the_page_knows_its_origin(crm_server, crm):
    client = crm_server.login(AGENT)
    response = client.get("/console/")
    assert response.headers["content-security-policy"] == f"frame-ancestors 'self' {crm.origin}"
    assert "x-frame-options" not in response.headers
    config = re.search(
        r'<script id="console-config" type="application/json">(.*?)</script>', response.text
    )
    assert f'"crmOrigin": "{crm.origin}"' in config.group(1)


# --- The worker as its own process, killed mid-way --------------------------------


def _shell(instance, code: str) -> str:
    """What ``code`` printed last, run by ``manage.py shell`` in the server's environment."""
    output = instance.manage("shell", "-c", code).stdout.strip().splitlines()
    return output[-1] if output else ""


def test_a_killed_worker_process_loses_nothing_and_its_successor_resends_nothing_acknowledged(
    tmp_path,
):
    crm = start_crm()
    env = crm_env(crm, CRM_DELIVERY_WORKER="external", CRM_POLL_SECONDS="0.1")
    try:
        with prepared_environment(tmp_path, free_port(), env) as instance:
            _shell(
                instance,
                "from chat.services import conversation_start, conversations_reidentify\n"
                "from directory.services import contact_create\n"
                "for i in range(3):\n"
                "    conversation_start(channel='webchat', identifier=f'c{i}@example.org')\n"
                "for i in range(3):\n"
                "    contact_create(name=f'Customer {i}', emails=[f'c{i}@example.org'])\n"
                "conversations_reidentify(identifiers=None)\n",
            )
            crm.succeed(3)
            crm.stall(1, seconds=4)  # the worker is killed while it waits for this one

            def worker() -> subprocess.Popen:
                return subprocess.Popen(
                    [sys.executable, "manage.py", "crm_deliver"], cwd=ROOT, env=instance.env,
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                )  # fmt: skip

            first = worker()
            deadline = time.monotonic() + 30
            while len(crm.received) < 4:
                assert time.monotonic() < deadline, crm.received
                time.sleep(0.05)
            first.send_signal(signal.SIGKILL)
            first.wait(10)
            acknowledged_before = {r.event_id for r in crm.acknowledged()}
            assert len(acknowledged_before) == 3

            second = worker()
            try:
                # The killed worker's claim is taken over once its lease ends
                # (CRM_WEBHOOK_TIMEOUT + 5 s).
                crm.wait_for(6, timeout=30)
            finally:
                second.send_signal(signal.SIGTERM)
                assert second.wait(15) == 0
            rows = json.loads(
                _shell(
                    instance,
                    "import json\nfrom crm.models import CrmDelivery\n"
                    "print(json.dumps([[str(r.event_id), str(r.conversation_id), r.event, r.state] "
                    "for r in "
                    "CrmDelivery.objects.order_by('id')]))",
                )
            )
    finally:
        crm.stop()
    assert [(event, state) for _, _, event, state in rows] == [
        ("identified", "delivered")] * 3 + [("updated", "delivered")] * 3  # fmt: skip
    acknowledged = Counter(r.event_id for r in crm.acknowledged())
    assert acknowledged == Counter(event_id for event_id, *_ in rows)
    # Each conversation's webhooks in the order written.
    for conversation_id in {conversation for _, conversation, *_ in rows}:
        written = [
            event_id for event_id, conversation, *_ in rows if conversation == conversation_id
        ]
        sent = [
            r.event_id
            for r in crm.acknowledged()
            if r.body["conversation"]["id"] == conversation_id
        ]
        assert sent == written
    for event_id in acknowledged_before:
        assert sum(r.event_id == event_id for r in crm.received) == 1

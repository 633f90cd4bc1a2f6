"""Every webhook channel end to end: a real daphne, a real console websocket.

A webhook arrives (signed as Sinch signs, or with the email token), and the
console receives the conversation ``identified`` with the expected identity:
matched, unmatched, ambiguous and, where the platform has one, named by the
platform. Sinch's REST API is the local server of tests/fake_sinch.py, so the
platform name travels daphne → HTTP → back as an ``updated`` push.
"""

import asyncio
import json
import time
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from websockets.asyncio.client import connect

from chat.webhooks.signatures import conversation_signature, voice_signature
from tests.e2e.conftest import (
    AGENT,
    EMAIL_TOKEN,
    SINCH_VOICE_KEY,
    SINCH_VOICE_SECRET,
    SINCH_WEBHOOK_SECRET,
)

APP_ID = "01HZAPPEXAMP1E000000000001"


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

    async def conversation(self, event: str, channel: str, value: str | None, **more) -> dict:
        """The next ``event`` for a conversation on ``channel`` with identifier ``value``."""

        def wanted(frame: dict) -> bool:
            if frame.get("type") != "conversation" or frame["event"] != event:
                return False
            conversation = frame["conversation"]
            identifier = conversation["identity"]["identifier"]
            return (
                conversation["channel"] == channel
                and identifier["value"] == value
                and all(conversation.get(k) == v for k, v in more.items())
            )

        return (await self.receive_until(wanted))["conversation"]


@pytest.fixture
async def console(server):
    cookie = server.session_cookie(AGENT)
    socket = await connect(
        f"{server.ws_url}/ws/console/", origin=server.origin, additional_headers={"Cookie": cookie}
    )
    client = Console(socket)
    await client.receive_until(lambda f: f["type"] == "snapshot")
    yield client
    await socket.close()


async def _post(server, path: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
    async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as client:
        return await client.post(path, content=body, headers=headers)


def _inbound(*, channel: str, identity: str, contact_id: str, text: str = "Hello") -> bytes:
    payload = {
        "app_id": APP_ID,
        "accepted_time": "2024-05-02T10:15:31.204518Z",
        "event_time": "2024-05-02T10:15:30Z",
        "project_id": "5b7c830f-0000-4000-8000-000000000001",
        "message": {
            "id": uuid.uuid4().hex.upper()[:26],
            "direction": "TO_APP",
            "contact_message": {"text_message": {"text": text}},
            "channel_identity": {"channel": channel, "identity": identity, "app_id": APP_ID},
            "conversation_id": f"CONV-{contact_id}",
            "contact_id": contact_id,
            "metadata": "",
            "accept_time": "2024-05-02T10:15:31.190211Z",
            "sender_id": "",
            "processing_mode": "CONVERSATION",
            "injected": False,
        },
        "message_metadata": "",
        "correlation_id": "",
    }
    return json.dumps(payload).encode()


async def _sinch_message(server, *, channel: str, identity: str, contact_id: str, text="Hello"):
    body = _inbound(channel=channel, identity=identity, contact_id=contact_id, text=text)
    return await _signed_sinch(server, body)


def _sinch_headers(body: bytes, *, secret=SINCH_WEBHOOK_SECRET, nonce=None, age: int = 0) -> dict:
    """Headers as Sinch signs a callback; ``age`` seconds ago (negative: in the future)."""
    nonce = nonce or uuid.uuid4().hex
    stamp = str(int(time.time()) - age)
    return {
        "Content-Type": "application/json",
        "x-sinch-webhook-signature": conversation_signature(secret, body, nonce, stamp),
        "x-sinch-webhook-signature-nonce": nonce,
        "x-sinch-webhook-signature-timestamp": stamp,
        "x-sinch-webhook-signature-algorithm": "HmacSHA256",
    }


async def _signed_sinch(server, body: bytes, **signing) -> httpx.Response:
    return await _post(
        server, "/webhooks/sinch/conversation/", body, _sinch_headers(body, **signing)
    )


def _voice_headers(
    body: bytes, *, secret: str = SINCH_VOICE_SECRET, key: str = SINCH_VOICE_KEY, age: int = 0
) -> dict[str, str]:
    """Sinch's signed-request headers, signed ``age`` seconds ago."""
    content_type = "application/json; charset=utf-8"
    stamp = (datetime.now(UTC) - timedelta(seconds=age)).strftime("%Y-%m-%dT%H:%M:%SZ")
    signature = voice_signature(
        app_secret=secret,
        method="POST",
        body=body,
        content_type=content_type,
        timestamp=stamp,
        path="/webhooks/sinch/voice/",
    )
    return {
        "Content-Type": content_type,
        "x-timestamp": stamp,
        "Authorization": f"Application {key}:{signature}",
    }


async def _voice(server, payload: dict, **signing) -> httpx.Response:
    body = json.dumps(payload).encode()
    return await _post(server, "/webhooks/sinch/voice/", body, _voice_headers(body, **signing))


async def _email(server, raw: bytes, token: str = EMAIL_TOKEN) -> httpx.Response:
    headers = {"Content-Type": "message/rfc822", "Authorization": f"Bearer {token}"}
    return await _post(server, "/webhooks/email/", raw, headers)


# --- Sinch Conversation API ------------------------------------------------------


async def test_whatsapp_matched_then_named_by_the_platform(server, sinch_api, console):
    sinch_api.add_contact("E2E-WA-ANNA", "Anna Svensson")
    response = await _sinch_message(
        server, channel="WHATSAPP", identity="46701234567", contact_id="E2E-WA-ANNA"
    )
    assert response.status_code == 200, response.text
    first = await console.conversation("identified", "WHATSAPP", "+46701234567")
    assert first["identity"]["status"] == "matched"
    assert first["identity"]["display_name"] == "Anna Maria Svensson"
    assert first["identity"]["contact"]["external_id"] == "CRM-1001"
    named = await console.conversation("updated", "WHATSAPP", "+46701234567")
    assert named["id"] == first["id"]
    assert named["identity"]["display_name"] == "Anna Svensson"
    assert named["identity"]["name_source"] == "platform"
    assert named["identity"]["possible_match"]["name"] == "Anna Maria Svensson"


async def test_messenger_named_from_its_channel_profile(server, sinch_api, console):
    sinch_api.profiles[("E2E-MSG-AMELIA", "MESSENGER")] = "Amelia Clarke"
    await _sinch_message(
        server, channel="MESSENGER", identity="2742085512340733", contact_id="E2E-MSG-AMELIA"
    )
    first = await console.conversation("identified", "MESSENGER", "2742085512340733")
    assert first["identity"]["contact"]["external_id"] == "CRM-2002"
    named = await console.conversation("updated", "MESSENGER", "2742085512340733")
    assert named["identity"]["display_name"] == "Amelia Clarke"
    assert named["identity"]["possible_match"]["name"] == "Amelia Clarke"


async def test_unmatched_whatsapp_and_ambiguous_sms(server, console):
    await _sinch_message(server, channel="WHATSAPP", identity="447700900123", contact_id="E2E-X")
    stranger = await console.conversation("identified", "WHATSAPP", "+447700900123")
    assert (stranger["identity"]["status"], stranger["identity"]["display_name"]) == (
        "unmatched",
        "+447700900123",
    )
    await _sinch_message(server, channel="SMS", identity="46812345678", contact_id="E2E-SMS")
    shared = await console.conversation("identified", "SMS", "+46812345678")
    assert shared["identity"]["status"] == "ambiguous"
    assert sorted(c["name"] for c in shared["identity"]["candidates"]) == [
        "Erik Lindqvist",
        "Karin Lindqvist",
    ]


async def test_an_agent_reply_reaches_sinch(server, sinch_api, console):
    await _sinch_message(server, channel="TELEGRAM", identity="520012345", contact_id="E2E-TG")
    conversation = await console.conversation("identified", "TELEGRAM", "520012345")
    assert conversation["identity"]["contact"]["external_id"] == "CRM-4003"
    await console.socket.send(
        json.dumps({"type": "reply", "conversation_id": conversation["id"],
                    "text": "Bonjour Hugo", "client_msg_id": "r1"})
    )  # fmt: skip
    await console.receive_until(lambda f: f["type"] == "ack")
    deadline = time.monotonic() + 5
    while not any(m["message"] == {"text_message": {"text": "Bonjour Hugo"}}
                  for m in sinch_api.sent):  # fmt: skip
        assert time.monotonic() < deadline, sinch_api.sent
        await asyncio.sleep(0.05)
    sent = next(m for m in sinch_api.sent if m["recipient"] == {"contact_id": "E2E-TG"})
    assert sent["channel_priority_order"] == ["TELEGRAM"]


# --- Voice -------------------------------------------------------------------------


def _ice(callid: str, cli: str) -> dict:
    return {
        "event": "ice",
        "callid": callid,
        "timestamp": "2024-05-02T10:20:00Z",
        "version": 1,
        "cli": cli,
        "to": {"type": "did", "endpoint": "+46700000001"},
        "domain": "pstn",
        "applicationKey": SINCH_VOICE_KEY,
        "originationType": "PSTN",
    }


async def test_a_call_rings_identified_then_is_answered_and_ends(server, console):
    answer = await _voice(server, _ice("e2e-call-1", "442079460958"))
    assert answer.status_code == 200, answer.text
    assert answer.json()["action"]["name"] == "park"
    ringing = await console.conversation("identified", "voice", "+442079460958")
    assert ringing["call_state"] == "ringing"
    assert ringing["identity"]["display_name"] == "Oliver Hughes"
    await _voice(server, {"event": "ace", "callid": "e2e-call-1"})
    answered = await console.conversation("updated", "voice", "+442079460958")
    assert answered["call_state"] == "answered"
    await _voice(server, {"event": "dice", "callid": "e2e-call-1", "reason": "CALLERHANGUP"})
    ended = await console.conversation("ended", "voice", "+442079460958")
    assert (ended["state"], ended["call_state"]) == ("ended", "ended")


async def test_unmatched_ambiguous_and_withheld_callers(server, console):
    await _voice(server, _ice("e2e-call-2", "+15550100999"))
    unknown = await console.conversation("identified", "voice", "+15550100999")
    assert unknown["identity"]["status"] == "unmatched"
    await _voice(server, _ice("e2e-call-3", "+46812345678"))
    shared = await console.conversation("identified", "voice", "+46812345678")
    assert shared["identity"]["status"] == "ambiguous"
    await _voice(server, _ice("e2e-call-4", "anonymous"))
    hidden = await console.conversation("identified", "voice", None)
    assert hidden["identity"]["status"] == "withheld"


# --- Email -------------------------------------------------------------------------


def _mail(sender: str, message_id: str, body: str = "Hello", extra: str = "") -> bytes:
    return (
        f"From: {sender}\r\nTo: support@cp.example\r\nSubject: =?utf-8?q?Fr=C3=A5ga?=\r\n"
        f"Message-ID: <{message_id}>\r\n{extra}Content-Type: text/plain; charset=utf-8\r\n"
        f"Content-Transfer-Encoding: 8bit\r\n\r\n{body}\r\n"
    ).encode()


async def test_emails_matched_unmatched_and_ambiguous(server, console):
    known = await _email(server, _mail("=?utf-8?q?Siobh=C3=A1n?= <siobhan@greenway.ie>", "e2e-1"))
    assert known.status_code == 200, known.text
    matched = await console.conversation("identified", "email", "siobhan@greenway.ie")
    assert matched["identity"]["display_name"] == "Siobhán O'Connor"
    assert matched["identity"]["claimed_name"] == "Siobhán"
    assert matched["subject"] == "Fråga"

    await _email(server, _mail("Jürgen <jürgen@müller.example>", "e2e-2"))
    idn = await console.conversation("identified", "email", "jürgen@xn--mller-kva.example")
    assert idn["identity"]["display_name"] == "Jürgen Müller"

    await _email(server, _mail("New Person <new.person@example.org>", "e2e-3"))
    unknown = await console.conversation("identified", "email", "new.person@example.org")
    assert unknown["identity"]["status"] == "unmatched"
    assert unknown["identity"]["claimed_name"] == "New Person"

    await _email(server, _mail("support@nordicbikes.se", "e2e-4"))
    shared = await console.conversation("identified", "email", "support@nordicbikes.se")
    assert shared["identity"]["status"] == "ambiguous"


async def test_an_email_reply_reaches_the_watching_console(server, console):
    first = (await _email(server, _mail("liam.roy@example.ca", "e2e-10"))).json()
    await console.socket.send(
        json.dumps({"type": "watch", "conversation_id": first["conversation_id"]})
    )
    await console.receive_until(lambda f: f["type"] == "message")
    reply = _mail(
        "liam.roy@example.ca", "e2e-11", body="Any news?", extra="In-Reply-To: <e2e-10>\r\n"
    )
    assert (await _email(server, reply)).json()["conversation_id"] == first["conversation_id"]
    message = await console.receive_until(lambda f: f["type"] == "message")
    assert message["message"]["text"] == "Any news?"


async def test_a_malformed_email_is_refused_with_a_reason(server):
    refused = await _email(server, b"Subject: nobody sent this\r\n\r\n?")
    assert (refused.status_code, refused.json()["error"]) == (400, "missing_from")


# --- Every Conversation API channel, end to end -------------------------------------------

PHONE_CHANNELS = ("WHATSAPP", "RCS", "VIBERBM", "MMS", "SMS")
CHAT_ID_CHANNELS = (
    "MESSENGER", "INSTAGRAM", "VIBER", "TELEGRAM", "LINE", "WECHAT", "KAKAOTALK",
    "KAKAOTALKCHAT", "APPLEBC", "SINCH_CHAT",
)  # fmt: skip
UNNAMED_CHANNELS = {"SMS", "SINCH_CHAT"}
# Numbers of this module's own contacts, so no other test's open conversation continues.
MATRIX_KNOWN, MATRIX_SHARED, MATRIX_STRANGER = "46705550101", "46705550102", "46705550103"

MATRIX_DIRECTORY = """
from directory.services import contact_create
chat = {chat_channels!r}
contact_create(name="Ingrid Matrisson", phones=["+{known}"],
               chat_ids=[(c, "mx-known-" + c.lower()) for c in chat])
for name in ("Per Delad", "Pia Delad"):
    contact_create(name=name, phones=["+{shared}"],
                   chat_ids=[(c, "mx-shared-" + c.lower()) for c in chat])
contact_create(name="Olle Namnsson", emails=["olle@namnsson.example"])
"""


@pytest.fixture(scope="module")
def matrix_directory(server):
    code = MATRIX_DIRECTORY.format(
        chat_channels=CHAT_ID_CHANNELS, known=MATRIX_KNOWN, shared=MATRIX_SHARED
    )
    server.manage("shell", "--no-imports", "-c", code)


def _matrix_identities(channel: str) -> dict[str, tuple[str, str]]:
    """case → (identity as Sinch sends it, normalised value)."""
    if channel in PHONE_CHANNELS:
        return {
            case: (number, f"+{number}")
            for case, number in (
                ("matched", MATRIX_KNOWN),
                ("ambiguous", MATRIX_SHARED),
                ("unmatched", MATRIX_STRANGER),
            )
        }
    return {
        "matched": (f"mx-known-{channel.lower()}",) * 2,
        "ambiguous": (f"mx-shared-{channel.lower()}",) * 2,
        "unmatched": (f"mx-stranger-{channel.lower()}",) * 2,
    }


PLATFORM_NAMES = {
    "matched": "Ingrid Matrisson",
    "ambiguous": "Pia Delad",
    "unmatched": "Olle Namnsson",
}


@pytest.mark.parametrize("channel", PHONE_CHANNELS + CHAT_ID_CHANNELS)
async def test_every_sinch_channel_reaches_the_console_identified(
    server, sinch_api, matrix_directory, console, channel
):
    identities = _matrix_identities(channel)
    for case, (identity, _) in identities.items():
        contact_id = f"MX-{channel}-{case}"
        sinch_api.add_contact(contact_id, PLATFORM_NAMES[case])
        sinch_api.profiles[(contact_id, channel)] = PLATFORM_NAMES[case]
        response = await _sinch_message(
            server, channel=channel, identity=identity, contact_id=contact_id
        )
        assert response.status_code == 200, response.text

    # Frames for the three arrive interleaved: collect them all, then look.
    cases = {value: case for case, (_, value) in identities.items()}
    wanted = {("identified", value) for value in cases}
    if channel not in UNNAMED_CHANNELS:
        wanted |= {("updated", value) for value in cases}
    frames = {}
    while not wanted <= frames.keys():
        frame = await console.receive_until(
            lambda f: (
                f["type"] == "conversation"
                and f["conversation"]["channel"] == channel
                and f["conversation"]["identity"]["identifier"]["value"] in cases
            )
        )
        value = frame["conversation"]["identity"]["identifier"]["value"]
        frames[(frame["event"], value)] = frame["conversation"]["identity"]

    verified = channel != "SMS"
    shown = {
        cases[value]: (identity["status"], identity["display_name"], identity["verified"])
        for (event, value), identity in frames.items()
        if event == "identified"
    }
    assert shown == {
        "matched": ("matched", "Ingrid Matrisson", verified),
        "ambiguous": ("ambiguous", identities["ambiguous"][1], verified),
        "unmatched": ("unmatched", identities["unmatched"][1], verified),
    }
    if channel in UNNAMED_CHANNELS:
        return  # no platform name: nothing more comes (the unit tests check nobody asks Sinch)
    named = {
        cases[value]: (
            identity["status"],
            identity["display_name"],
            identity["name_source"],
            identity["possible_match"]["name"],
        )
        for (event, value), identity in frames.items()
        if event == "updated"
    }
    assert named == {
        "matched": ("matched", "Ingrid Matrisson", "platform", "Ingrid Matrisson"),
        "ambiguous": ("ambiguous", "Pia Delad", "platform", "Pia Delad"),
        "unmatched": ("unmatched", "Olle Namnsson", "platform", "Olle Namnsson"),
    }


# --- Refused callbacks store nothing -------------------------------------------------------


async def test_forged_stale_unsigned_and_replayed_sinch_callbacks_store_nothing(
    server, sinch_api, console
):
    identity = "46705550199"
    sinch_api.add_contact("E2E-MALLORY", "Mallory Example")
    body = _inbound(channel="WHATSAPP", identity=identity, contact_id="E2E-MALLORY", text="pay me")
    refusals = {
        "forged": _sinch_headers(body, secret="not-the-secret", nonce="E2E-N-FORGED"),
        "stale": _sinch_headers(body, age=400, nonce="E2E-N-STALE"),
        "future": _sinch_headers(body, age=-400, nonce="E2E-N-FUTURE"),
        "unsigned": {"Content-Type": "application/json"},
    }
    for case, headers in refusals.items():
        response = await _post(server, "/webhooks/sinch/conversation/", body, headers)
        assert response.status_code == 401, (case, response.text)
    assert server.count("chat_conversation", "identifier_value = ?", f"+{identity}") == 0
    assert server.count("chat_message", "text = ?", "pay me") == 0
    assert server.count("chat_webhooknonce", "nonce LIKE ?", "E2E-N-%") == 0
    assert server.count("chat_sinchlink", "contact_id = ?", "E2E-MALLORY") == 0

    genuine = _sinch_headers(body, nonce="E2E-N-GENUINE")
    assert (await _post(server, "/webhooks/sinch/conversation/", body, genuine)).status_code == 200
    replay = await _post(server, "/webhooks/sinch/conversation/", body, genuine)
    assert (replay.status_code, replay.json()["error"]) == (401, "replayed_nonce")
    # The same message id signed afresh (Sinch retrying) is accepted and stored once.
    retried = await _post(server, "/webhooks/sinch/conversation/", body, _sinch_headers(body))
    assert retried.status_code == 200
    assert server.count("chat_conversation", "identifier_value = ?", f"+{identity}") == 1
    assert server.count("chat_message", "text = ?", "pay me") == 1
    # The console saw the genuine callback once: started, identified, then the
    # platform's name; no second conversation and nothing from the refused ones.
    seen = []
    while not seen or seen[-1][0] != "updated":
        frame = await console.receive_until(
            lambda f: (
                f["type"] == "conversation"
                and f["conversation"]["identity"]["identifier"]["value"] == f"+{identity}"
            )
        )
        seen.append((frame["event"], frame["conversation"]["id"]))
    assert [event for event, _ in seen] == ["started", "identified", "updated"]
    assert len({conversation_id for _, conversation_id in seen}) == 1


async def test_forged_stale_and_replayed_calls_store_nothing(server, console):
    ice = _ice("e2e-call-forged", "+46705550198")
    body = json.dumps(ice).encode()
    refusals = {
        "wrong secret": _voice_headers(body, secret="d3Jvbmc="),
        "wrong key": _voice_headers(body, key="another-app"),
        "stale": _voice_headers(body, age=600),
        "future": _voice_headers(body, age=-600),
        "unsigned": {"Content-Type": "application/json; charset=utf-8"},
    }
    for case, headers in refusals.items():
        response = await _post(server, "/webhooks/sinch/voice/", body, headers)
        assert response.status_code == 401, (case, response.text)
    assert server.count("chat_voicecall", "call_id = ?", "e2e-call-forged") == 0
    assert server.count("chat_conversation", "identifier_value = ?", "+46705550198") == 0

    genuine = _voice_headers(body)
    first = await _post(server, "/webhooks/sinch/voice/", body, genuine)
    assert first.status_code == 200
    # Voice signatures have no nonce: a replay inside the window verifies, and
    # repeating an event changes nothing.
    replay = await _post(server, "/webhooks/sinch/voice/", body, genuine)
    assert (replay.status_code, replay.json()) == (200, first.json())
    assert server.count("chat_voicecall", "call_id = ?", "e2e-call-forged") == 1
    assert server.count("chat_conversation", "identifier_value = ?", "+46705550198") == 1
    ringing = await console.conversation("identified", "voice", "+46705550198")
    await _voice(server, {"event": "ace", "callid": "e2e-call-forged"})
    following = await console.receive_until(
        lambda f: f["type"] == "conversation" and f["conversation"]["id"] == ringing["id"]
    )
    assert (following["event"], following["conversation"]["call_state"]) == (
        "updated",
        "answered",
    )  # no second "identified" in between


async def test_emails_without_the_token_or_delivered_twice_store_nothing_more(server, console):
    raw = _mail("Mallory <mallory@e2e.example>", "e2e-forged-1", body="let me in")
    for token in ("wrong-token", ""):
        headers = {"Content-Type": "message/rfc822"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        response = await _post(server, "/webhooks/email/", raw, headers)
        assert response.status_code == 401
    assert server.count("chat_inboundemail", "header_message_id = ?", "e2e-forged-1") == 0
    assert server.count("chat_conversation", "identifier_value = ?", "mallory@e2e.example") == 0
    assert server.count("chat_message", "text LIKE ?", "let me in%") == 0

    first = await _email(server, raw)
    assert first.status_code == 200
    again = await _email(server, raw)
    assert again.json() == {**first.json(), "duplicate": True}
    assert server.count("chat_inboundemail", "header_message_id = ?", "e2e-forged-1") == 1
    assert server.count("chat_message", "text LIKE ?", "let me in%") == 1
    identified = await console.conversation("identified", "email", "mallory@e2e.example")
    assert identified["identity"]["status"] == "unmatched"
    assert identified["identity"]["claimed_name"] == "Mallory"

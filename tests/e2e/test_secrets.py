"""Secrets and tokens never reach the logs: real requests of every kind, good
and bad, against the real daphne, then its whole log (everything the e2e run
sent it so far) is searched for each secret, token, password and cookie."""

import asyncio
import base64
import hashlib
import hmac
import json
import time
import uuid

import httpx
from websockets.asyncio.client import connect

from tests.crm_standin import SECRET as CRM_SECRET
from tests.e2e.conftest import (
    ADMIN,
    AGENT,
    API_TOKEN,
    EMAIL_TOKEN,
    IDENTITY_SECRET,
    METRICS_TOKEN,
    SINCH_VOICE_SECRET,
    SINCH_WEBHOOK_SECRET,
)
from tests.e2e.test_channels import _sinch_headers, _voice_headers
from tests.fake_sinch import KEY_SECRET

GUESSES = ["e2e-api-token-guess", "e2e-email-token-guess", "0" * 64]


async def _visitor_traffic(server, email: str, identity_hash: str | None) -> list[str]:
    """Start, talk, drop, resume: the resume token and identity hash on the wire."""
    frame = {"type": "start", "email": email}
    if identity_hash:
        frame["identity_hash"] = identity_hash
    async with connect(f"{server.ws_url}/ws/chat/", origin=server.origin) as socket:
        await socket.send(json.dumps(frame))
        started = json.loads(await asyncio.wait_for(socket.recv(), 5))
        if started["type"] != "started":
            return []
        await socket.send(json.dumps({"type": "message", "text": "hello", "client_msg_id": "1"}))
        await asyncio.wait_for(socket.recv(), 5)
    async with connect(f"{server.ws_url}/ws/chat/", origin=server.origin) as socket:
        await socket.send(json.dumps({"type": "resume", "token": started["token"]}))
        await asyncio.wait_for(socket.recv(), 5)
        await socket.send(json.dumps({"type": "resume", "token": started["token"][:-2] + "xx"}))
        await asyncio.wait_for(socket.recv(), 5)
    return [started["token"]]


def test_no_secret_token_or_password_is_ever_logged(server, sinch_api, crm_server):
    found: list[str] = [
        API_TOKEN,
        EMAIL_TOKEN,
        IDENTITY_SECRET,
        SINCH_WEBHOOK_SECRET,
        SINCH_VOICE_SECRET,
        base64.b64decode(SINCH_VOICE_SECRET).decode(),
        KEY_SECRET,
        CRM_SECRET,
        METRICS_TOKEN,
        AGENT[1],
        ADMIN[1],
        *GUESSES,
    ]
    web = httpx.Client(base_url=server.base_url, timeout=10)

    # Metrics scraped with the token and with a guess.
    assert web.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}).is_success
    assert web.get("/metrics", headers={"Authorization": "Bearer metrics-guess"}).status_code == 401
    found.append("metrics-guess")

    # Sign-ins: the session and CSRF cookies, a wrong password.
    for credentials in (AGENT, ADMIN):
        client = server.login(credentials)
        found += [client.cookies["sessionid"], client.cookies["csrftoken"]]
        assert client.get("/console/").status_code in {200, 403}
    client = httpx.Client(base_url=server.base_url)
    client.get("/accounts/login/")
    client.post(
        "/accounts/login/",
        data={
            "username": "agent",
            "password": "agent-guess",
            "csrfmiddlewaretoken": client.cookies["csrftoken"],
        },
    )
    found.append("agent-guess")

    # Web chat: a signed start, a forged one, resumes with the token and a near miss.
    proof = hmac.new(IDENTITY_SECRET.encode(), b"logs@example.org", hashlib.sha256).hexdigest()
    found.append(proof)
    found += asyncio.run(_visitor_traffic(server, "logs@example.org", proof))
    found += asyncio.run(_visitor_traffic(server, "logs2@example.org", None))
    asyncio.run(_visitor_traffic(server, "logs3@example.org", GUESSES[2]))

    # The identify API and the email webhook, with the right and a wrong bearer token.
    body = {"channel": "voice", "identifier": "46812345678"}
    assert (
        web.post(
            "/api/identify", json=body, headers={"Authorization": f"Bearer {API_TOKEN}"}
        ).status_code
        == 200
    )
    assert (
        web.post(
            "/api/identify", json=body, headers={"Authorization": f"Bearer {GUESSES[0]}"}
        ).status_code
        == 401
    )
    mail = b"From: Logs <logs@example.org>\r\nSubject: x\r\n\r\nhi\r\n"
    for token, status in ((EMAIL_TOKEN, 200), (GUESSES[1], 401)):
        response = web.post(
            "/webhooks/email/",
            content=mail,
            headers={"Content-Type": "message/rfc822", "Authorization": f"Bearer {token}"},
        )
        assert response.status_code == status
    web.post(
        "/webhooks/email/",
        content=b"From: nobody\r\n\r\n",
        headers={"Content-Type": "message/rfc822", "Authorization": f"Bearer {EMAIL_TOKEN}"},
    )

    # Sinch: a signed message whose platform name is fetched with an OAuth token,
    # a forged and a replayed callback; Voice signed and forged.
    sinch_api.add_contact("E2E-LOGS", "Logs Person")
    message = json.dumps(
        {
            "app_id": "A",
            "project_id": "5b7c830f-0000-4000-8000-000000000001",
            "message": {
                "id": uuid.uuid4().hex,
                "contact_id": "E2E-LOGS",
                "contact_message": {"text_message": {"text": "hi"}},
                "channel_identity": {"channel": "WHATSAPP", "identity": "46700000992"},
            },
        }
    ).encode()
    nonce = uuid.uuid4().hex
    for secret, status in (
        (SINCH_WEBHOOK_SECRET, 200),
        (SINCH_WEBHOOK_SECRET, 401),
        ("forged-secret", 401),
    ):
        headers = _sinch_headers(message, secret=secret, nonce=nonce)
        response = web.post("/webhooks/sinch/conversation/", content=message, headers=headers)
        assert response.status_code == status, response.text
    ice = json.dumps({"event": "ice", "callid": uuid.uuid4().hex, "cli": "46812345678"}).encode()
    assert (
        web.post(
            "/webhooks/sinch/voice/",
            content=ice,
            headers=_voice_headers(ice, secret=SINCH_VOICE_SECRET),
        ).status_code
        == 200
    )
    forged = base64.b64encode(b"forged").decode()
    assert (
        web.post(
            "/webhooks/sinch/voice/", content=ice, headers=_voice_headers(ice, secret=forged)
        ).status_code
        == 401
    )

    # CRM mode: a chat handed to the CRM by a webhook signed with its secret.
    asyncio.run(_visitor_traffic(crm_server, "crm.logs@example.org", None))

    deadline = time.monotonic() + 10
    while not sinch_api.tokens and time.monotonic() < deadline:
        time.sleep(0.1)
    found += sorted(sinch_api.tokens)
    time.sleep(1)  # let the servers write what they log about all this

    logs = {
        s.log.name + str(i): s.log.read_text(errors="replace")
        for i, s in enumerate((server, crm_server))
    }
    assert "refused" in logs["daphne.log0"]  # the log does record what happened
    for name, text in logs.items():
        leaked = [secret for secret in found if secret and secret in text]
        assert not leaked, f"{name} holds {leaked}"
    assert len(found) > 20

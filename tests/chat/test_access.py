"""Who may see what. Every console path and frame, every admin page and the
identify API, tried as anonymous, as a website visitor and as a staff user
without the permission; and one visitor against another's conversation."""

import hashlib
import re
import string
import uuid
from datetime import timedelta

import pytest
from django.contrib import admin
from django.contrib.auth.models import Group
from django.test import Client
from django.urls import NoReverseMatch, reverse
from django.utils import timezone

from chat import services
from chat.models import Conversation, Message
from directory.services import contact_create

pytestmark = pytest.mark.django_db(transaction=True)

SECRET_NAME = "Ingrid Secretsdottir"


@pytest.fixture
def data():
    """Something in every admin table an intruder could hope to read."""
    contact = contact_create(name=SECRET_NAME, emails=["ingrid@example.com"])
    rejected = services.email_reject(raw=b"From: x", code="invalid_from", reason=SECRET_NAME)
    group = Group.objects.create(name="agents")
    return {contact._meta.model: contact, rejected._meta.model: rejected, Group: group}


def _admin_urls(objects) -> list[str]:
    """Every named admin URL: the index, each app, and each model admin's own
    (changelist, add, change, delete, history, custom views)."""
    urls = [reverse("admin:index"), reverse("admin-insights")]
    apps = {model._meta.app_label for model in admin.site._registry}
    urls += [reverse("admin:app_list", args=[label]) for label in sorted(apps)]
    for model, model_admin in admin.site._registry.items():
        for pattern in model_admin.get_urls():
            if not pattern.name:
                continue
            try:
                urls.append(reverse(f"admin:{pattern.name}"))
            except NoReverseMatch:
                if model in objects:
                    urls.append(reverse(f"admin:{pattern.name}", args=[objects[model].pk]))
    return urls


def test_every_admin_page_sends_anonymous_users_to_log_in(data):
    urls = _admin_urls(data)
    assert len(urls) > 20
    for url in urls:
        response = Client().get(url)
        assert response.status_code == 302, url
        assert response["Location"].startswith("/admin/login/"), url


def test_every_admin_page_refuses_staff_without_permissions(data, staff_without_permissions):
    client = Client()
    client.force_login(staff_without_permissions)
    for url in _admin_urls(data):
        response = client.get(url)
        if url == reverse("admin:index"):
            assert response.status_code == 200
            assert "permission to view or edit anything" in response.content.decode()
            continue
        assert response.status_code in {403, 404}, url  # 404: an app with nothing for them
        assert SECRET_NAME not in response.content.decode(), url


def test_admin_actions_refuse_staff_without_permissions(data, staff_without_permissions):
    client = Client()
    client.force_login(staff_without_permissions)
    contact = data[next(m for m in data if m._meta.model_name == "contact")]
    for action in ("export_selected", "merge_contacts", "delete_selected"):
        response = client.post(
            reverse("admin:directory_contact_changelist"),
            {"action": action, "_selected_action": [contact.pk]},
        )
        assert response.status_code == 403, action
        assert SECRET_NAME not in response.content.decode()
    assert type(contact).objects.filter(pk=contact.pk).exists()


@pytest.mark.parametrize("who", ["anonymous", "staff", "admin"])
def test_metrics_want_their_bearer_token_whoever_is_logged_in(
    who, data, staff_without_permissions, admin_user, settings
):
    settings.CP_METRICS_TOKEN = "the-metrics-token"
    client = Client()
    if who == "staff":
        client.force_login(staff_without_permissions)
    elif who == "admin":
        client.force_login(admin_user)
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer guess").status_code == 401
    assert (
        Client().get("/metrics", HTTP_AUTHORIZATION="Bearer the-metrics-token").status_code == 200
    )


@pytest.mark.parametrize("who", ["anonymous", "visitor", "staff", "admin"])
def test_the_identify_api_wants_its_bearer_token_whoever_is_logged_in(
    who, data, staff_without_permissions, admin_user, settings
):
    settings.CP_API_TOKEN = "the-api-token"
    client = Client()
    if who == "staff":
        client.force_login(staff_without_permissions)
    elif who == "admin":
        client.force_login(admin_user)
    body = {"channel": "webchat", "identifier": "ingrid@example.com"}
    response = client.post("/api/identify", body, content_type="application/json")
    assert response.status_code == 401
    assert SECRET_NAME not in response.content.decode()


def test_the_console_page_sends_a_visitor_of_the_site_to_log_in():
    visitor = Client()
    assert visitor.get("/").status_code == 200  # the demo site with the widget
    response = visitor.get("/console/")
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")


# --- The console socket ----------------------------------------------------------------


async def _refused_console(connect, cookie, code, conversation_id):
    console = await connect("/ws/console/", cookie=cookie)
    # Frames sent at once, before the refusal lands, are dropped, never handled.
    await console.send({"type": "watch", "conversation_id": conversation_id})
    await console.send({"type": "reply", "conversation_id": conversation_id, "text": "pwned"})
    output = await console.communicator.receive_output(timeout=3)
    assert output == {"type": "websocket.close", "code": code}
    assert await console.nothing()


async def test_anonymous_and_unpermitted_console_sockets_see_and_write_nothing(
    connect, staff_cookie, sync
):
    conversation, _ = await sync(
        services.conversation_start, channel="webchat", identifier="ingrid@example.com"
    )
    await _refused_console(connect, None, 4401, str(conversation.pk))
    await _refused_console(connect, staff_cookie, 4403, str(conversation.pk))
    assert not await Message.objects.aexists()


async def test_a_visitor_socket_cannot_act_as_a_console(connect, sync):
    other, _ = await sync(
        services.conversation_start, channel="webchat", identifier="ingrid@example.com"
    )
    await sync(services.message_post, conversation=other, sender="visitor", text="private")
    visitor = await connect("/ws/chat/")
    await visitor.send({"type": "start", "email": "mallory@example.com"})
    assert (await visitor.receive())["type"] == "started"
    for frame in (
        {"type": "watch", "conversation_id": str(other.pk)},
        {"type": "reply", "conversation_id": str(other.pk), "text": "hi"},
        {"type": "resume", "token": str(other.pk)},
        {"type": "resume", "conversation_id": str(other.pk)},
    ):
        await visitor.send(frame)
        error = await visitor.receive()
        assert error["code"] in {"unknown_type", "invalid_token"}, frame
    assert await visitor.nothing()
    assert await Message.objects.acount() == 1


# --- One visitor against another ------------------------------------------------------


async def test_a_visitor_never_receives_another_visitors_conversation(connect, sync):
    alice = await connect("/ws/chat/")
    await alice.send({"type": "start", "email": "alice@example.com"})
    alice_started = await alice.receive()
    mallory = await connect("/ws/chat/")
    await mallory.send({"type": "start", "email": "alice@example.com"})  # her email, even
    assert (await mallory.receive())["type"] == "started"

    conversation = await Conversation.objects.aget(pk=alice_started["conversation_id"])
    await sync(services.message_post, conversation=conversation, sender="agent", text="For Alice")
    await alice.send({"type": "message", "text": "From Alice", "client_msg_id": "1"})
    assert (await alice.receive_until(lambda f: f["type"] == "message"))["text"] == "For Alice"
    assert await mallory.nothing(0.5)


def test_resume_tokens_are_unguessable_and_ids_not_enumerable(db):
    started = [
        services.conversation_start(channel="webchat", identifier=f"v{n}@example.com")
        for n in range(100)
    ]
    tokens = [token for _, token in started]
    assert len(set(tokens)) == 100
    alphabet = set(string.ascii_letters + string.digits + "-_")
    for token in tokens:
        assert len(token) >= 43 and set(token) <= alphabet  # 32 random bytes, base64url
    assert len({token[:6] for token in tokens}) == 100  # no shared prefix to walk
    for conversation, token in started:
        stored = Conversation.objects.get(pk=conversation.pk)
        assert stored.visitor_token_hash == hashlib.sha256(token.encode()).hexdigest()
        assert token not in str(stored.identity)
        assert uuid.UUID(str(stored.pk)).version == 4
    ids = sorted(str(conversation.pk) for conversation, _ in started)
    assert ids != [str(conversation.pk) for conversation, _ in started]  # not in order made


async def test_the_token_of_a_long_ended_conversation_opens_nothing(connect, sync):
    visitor = await connect("/ws/chat/")
    await visitor.send({"type": "start", "email": "alice@example.com"})
    started = await visitor.receive()
    await visitor.send({"type": "message", "text": "my address is …", "client_msg_id": "1"})
    await visitor.receive()
    await visitor.send({"type": "end"})
    assert (await visitor.receive())["type"] == "ended"

    # Just ended: a visitor reconnecting sees the transcript and the end, and may not write.
    again = await connect("/ws/chat/")
    await again.send({"type": "resume", "token": started["token"]})
    frames = [await again.receive() for _ in range(3)]
    assert [f["type"] for f in frames] == ["started", "message", "ended"]
    await again.send({"type": "message", "text": "late", "client_msg_id": "2"})
    assert (await again.receive())["code"] == "conversation_ended"

    # Eleven minutes later the token is worthless.
    await Conversation.objects.filter(pk=started["conversation_id"]).aupdate(
        ended_at=timezone.now() - timedelta(minutes=11)
    )
    later = await connect("/ws/chat/")
    await later.send({"type": "resume", "token": started["token"]})
    assert (await later.receive())["code"] == "invalid_token"
    assert await later.nothing()
    assert await Message.objects.acount() == 1
    assert re.fullmatch(r"[0-9a-f-]{36}", started["conversation_id"])

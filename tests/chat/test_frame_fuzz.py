"""Whatever arrives on a websocket, the socket answers and lives on, the
consumer never crashes, and nothing is stored that was not acknowledged
(hypothesis: random bytes, text, JSON of any shape, frames with the right
types and wrong fields)."""

import asyncio
import json
import uuid

import pytest
from channels.db import database_sync_to_async
from channels.layers import channel_layers
from channels.testing import WebsocketCommunicator
from django.db import connections
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chat import limits, services
from chat.hub import stop_hub
from chat.models import Conversation, Message
from cpweb.asgi import application
from tests.chat.conftest import ORIGIN

pytestmark = pytest.mark.django_db(transaction=True)

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                  max_size=4),
    max_leaves=8,
)  # fmt: skip
RAW = st.one_of(
    st.text(max_size=300),
    st.binary(max_size=300),
    JSON.map(json.dumps),
    st.just("x" * 20_000),
)


def _frames(types: list[str], fields: dict[str, st.SearchStrategy]) -> st.SearchStrategy:
    typed = st.fixed_dictionaries(
        {"type": st.sampled_from(types) | JSON},
        optional={key: strategy | JSON for key, strategy in fields.items()},
    ).map(json.dumps)
    return st.lists(st.one_of(typed, typed, RAW), min_size=1, max_size=8)


VISITOR_FRAMES = _frames(
    ["start", "resume", "message", "end"],
    {
        "email": st.emails() | st.text(max_size=40),
        "name": st.text(max_size=250),
        "identity_hash": st.text(alphabet="0123456789abcdef", min_size=64, max_size=64),
        "token": st.text(max_size=60),
        "after": st.integers(-3, 10**20),
        "text": st.text(min_size=1, max_size=50),
        "client_msg_id": st.text(max_size=120),
    },
)
FUZZ_SETTINGS = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


async def _exchange(frames: list[str], headers: list[tuple[bytes, bytes]], path: str) -> list:
    """Send ``frames`` on a fresh socket, then a sentinel; every frame received until
    the sentinel's answer. Fails if the socket is closed or the consumer crashes."""
    channel_layers.backends.clear()
    communicator = WebsocketCommunicator(application, path, headers=headers)
    try:
        connected, _ = await communicator.connect()
        assert connected
        for frame in frames:  # sent as daphne sends them (even empty ones)
            kind = "bytes" if isinstance(frame, bytes) else "text"
            await communicator.send_input({"type": "websocket.receive", kind: frame})
        sentinel = f"sentinel-{uuid.uuid4()}"
        await communicator.send_to(text_data=json.dumps({"type": sentinel}))
        received = []
        while True:
            output = await communicator.receive_output(timeout=5)
            assert output["type"] == "websocket.send", f"the socket was closed: {output}"
            frame = json.loads(output["text"])
            received.append(frame)
            if frame.get("type") == "error" and sentinel in frame.get("message", ""):
                return received
    finally:
        await communicator.disconnect()
        await stop_hub()
        await database_sync_to_async(connections.close_all)()
        channel_layers.backends.clear()


def _stored_since(conversations: set, messages: set) -> tuple[set, set]:
    return (
        set(Conversation.objects.exclude(pk__in=conversations).values_list("pk", flat=True)),
        set(Message.objects.exclude(pk__in=messages).values_list("pk", flat=True)),
    )


@pytest.fixture
def fuzz_settings(settings):
    settings.CP_WS_FRAMES_PER_SECOND = 10_000
    settings.CP_WS_FRAME_BURST = 10_000
    settings.CP_WEBCHAT_STARTS_PER_MINUTE = 0


@FUZZ_SETTINGS
@given(frames=VISITOR_FRAMES)
def test_the_visitor_socket_survives_any_frames_and_stores_only_what_it_acks(fuzz_settings, frames):
    limits.reset()
    conversations = set(Conversation.objects.values_list("pk", flat=True))
    messages = set(Message.objects.values_list("pk", flat=True))
    received = asyncio.run(_exchange(frames, [ORIGIN], "/ws/chat/"))
    assert all(frame.get("type") != "error" or frame.get("message") for frame in received)
    new_conversations, new_messages = _stored_since(conversations, messages)
    started = {f["conversation_id"] for f in received if f["type"] == "started"}
    acked = {f["message_id"] for f in received if f["type"] == "ack"}
    assert {str(pk) for pk in new_conversations} <= started
    assert new_messages <= acked


@pytest.fixture
def open_conversation(db):
    conversation, _ = services.conversation_start(channel="webchat", identifier="a@example.com")
    services.message_post(conversation=conversation, sender=Message.Sender.VISITOR, text="hi")
    return str(conversation.pk)


@FUZZ_SETTINGS
@given(data=st.data())
def test_the_console_survives_any_frames_and_stores_only_what_it_acks(
    fuzz_settings, agent_cookie, open_conversation, data
):
    frames = data.draw(
        _frames(
            ["watch", "unwatch", "reply"],
            {
                "conversation_id": st.sampled_from([open_conversation, str(uuid.uuid4())])
                | st.text(max_size=40),
                "text": st.text(min_size=1, max_size=50),
                "client_msg_id": st.text(max_size=120),
            },
        )
    )
    conversations = set(Conversation.objects.values_list("pk", flat=True))
    messages = set(Message.objects.values_list("pk", flat=True))
    headers = [ORIGIN, (b"cookie", agent_cookie)]
    received = asyncio.run(_exchange(frames, headers, "/ws/console/"))
    assert received[0]["type"] == "snapshot"
    new_conversations, new_messages = _stored_since(conversations, messages)
    assert not new_conversations
    assert new_messages <= {f["message_id"] for f in received if f["type"] == "ack"}
    assert all(
        sender == Message.Sender.AGENT
        for sender in Message.objects.filter(pk__in=new_messages).values_list("sender", flat=True)
    )

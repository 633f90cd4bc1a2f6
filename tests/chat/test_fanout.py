"""Console fan-out: what one lifecycle event costs, however many consoles are open.

README, *How pushes travel*: an event is encoded once, reaches each process once
through the channel layer, and the hub writes that one frame to every console,
with no per-console thread hop (Channels' ``close_old_connections`` before each
handler). ``bench/fanout.py`` measures what this buys; these tests pin the design.
"""

import channels.consumer
import pytest
from channels.layers import get_channel_layer

from chat.hub import get_hub

pytestmark = pytest.mark.django_db(transaction=True)

CONSOLES = 5


async def _consoles(connect, agent_cookie):
    consoles = []
    for _ in range(CONSOLES):
        console = await connect("/ws/console/", cookie=agent_cookie)
        assert (await console.receive())["type"] == "snapshot"
        consoles.append(console)
    return consoles


async def _frames(console, count: int) -> list[str]:
    texts = []
    for _ in range(count):
        output = await console.communicator.receive_output(timeout=3)
        assert output["type"] == "websocket.send"
        texts.append(output["text"])
    return texts


async def test_a_new_chat_is_encoded_once_and_reaches_the_process_once(
    connect, agent_cookie, monkeypatch
):
    consoles = await _consoles(connect, agent_cookie)
    layer, hub = get_channel_layer(), await get_hub()
    published, delivered = [], []
    group_send, deliver = layer.group_send, hub.deliver

    async def counting_group_send(group, message):
        published.extend(event["type"] for event in message["events"])  # a hub.batch
        await group_send(group, message)

    async def counting_deliver(event):
        delivered.append(event["type"])
        await deliver(event)

    monkeypatch.setattr(layer, "group_send", counting_group_send)
    monkeypatch.setattr(hub, "deliver", counting_deliver)

    visitor = await connect("/ws/chat/")
    await visitor.send({"type": "start", "email": "anna@example.com"})
    assert (await visitor.receive())["type"] == "started"
    frames = [await _frames(console, 2) for console in consoles]

    # Two events (started, identified): published once each (in one or two
    # channel-layer messages), two deliveries to this process, not 2 x 5.
    assert published == ["hub.conversation", "hub.conversation"]
    assert delivered == ["hub.conversation", "hub.conversation"]
    # Every console was handed the very same encoded frames: one serialisation.
    for started, identified in frames[1:]:
        assert started is frames[0][0]
        assert identified is frames[0][1]
    assert '"event":"started"' in frames[0][0] and '"event":"identified"' in frames[0][1]


async def test_pushes_and_frames_take_no_thread_hop_per_console(connect, agent_cookie, monkeypatch):
    """Channels' dispatch runs close_old_connections in the database thread before
    every handler; the consumers skip it (their database calls close stale
    connections themselves), and hub pushes bypass dispatch altogether."""
    consoles = await _consoles(connect, agent_cookie)
    hops = []

    async def counting_close():
        hops.append(1)

    monkeypatch.setattr(channels.consumer, "aclose_old_connections", counting_close)
    visitor = await connect("/ws/chat/")
    await visitor.send({"type": "start", "email": "anna@example.com"})
    assert (await visitor.receive())["type"] == "started"
    await visitor.send({"type": "end"})
    assert (await visitor.receive())["type"] == "ended"
    for console in consoles:
        assert len(await _frames(console, 3)) == 3  # started, identified, ended
    assert hops == []

"""The suite runs on the backends the environment names, not silently on defaults."""

import os

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import connection


def test_database_is_the_configured_one(db):
    expected = (
        "postgresql" if os.environ.get("DATABASE_URL", "").startswith("postgres") else "sqlite"
    )
    assert connection.vendor == expected


def test_channel_layer_is_the_configured_one_and_carries_a_message():
    layer = get_channel_layer()
    expected = "RedisPubSubChannelLayer" if os.environ.get("REDIS_URL") else "InMemoryChannelLayer"
    assert type(layer).__name__ == expected

    async def round_trip() -> dict:
        channel = await layer.new_channel()
        await layer.send(channel, {"type": "probe", "text": "hello"})
        return await layer.receive(channel)

    assert async_to_sync(round_trip)() == {"type": "probe", "text": "hello"}

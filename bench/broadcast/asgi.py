"""ASGI entry point of the broadcast room (``daphne bench.broadcast.asgi:application``).

Like the tutorial's, less the HTTP views and the session/auth middleware: the room needs
no user, and cpweb's auth runs once per connection, never per frame.
"""

import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.broadcast.settings")
django.setup()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import re_path  # noqa: E402

from bench.broadcast.consumers import ChatConsumer  # noqa: E402

application = ProtocolTypeRouter(
    {
        "websocket": URLRouter([re_path(r"ws/chat/(?P<room_name>\w+)/$", ChatConsumer.as_asgi())]),
    }
)

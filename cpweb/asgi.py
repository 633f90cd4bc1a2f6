"""ASGI entry point: Django for HTTP, Channels for websockets (served by daphne)."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cpweb.settings")
# Django must be set up before anything imports models (the consumers do).
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.conf import settings  # noqa: E402

from chat.routing import websocket_urlpatterns  # noqa: E402
from chat.wire import RawFrames  # noqa: E402
from cpweb.middleware import WebsocketDatabaseGuard  # noqa: E402
from crm.outbox import handoff_enabled  # noqa: E402

# Each route carries its own origin check (chat/routing.py): the widget opens
# from other sites, the console only from this one.
application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": RawFrames(
            WebsocketDatabaseGuard(AuthMiddlewareStack(URLRouter(websocket_urlpatterns)))
        ),
    }
)

# CRM mode: this process delivers the webhook outbox too, unless a separate
# `manage.py crm_deliver` does (CRM_DELIVERY_WORKER=external).
if handoff_enabled() and settings.CRM_DELIVERY_WORKER == "inprocess":
    from crm.worker import start_in_background

    start_in_background()

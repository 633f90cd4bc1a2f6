"""Websocket routes (SPEC §3, §4) and who may open them."""

from typing import Any
from urllib.parse import ParseResult

from channels.security.websocket import AllowedHostsOriginValidator, OriginValidator
from django.conf import settings
from django.urls import path

from chat.consumers import ConsoleConsumer, VisitorConsumer


class WidgetOriginValidator(OriginValidator):
    """The widget socket opens from this site (ALLOWED_HOSTS) and from the sites
    in WEBCHAT_ALLOWED_ORIGINS (``*`` for any). Clients that send no Origin at
    all are not browsers on another site and are let through: the visitor
    socket carries no cookie-based authority."""

    def __init__(self, application: Any) -> None:
        self.application = application
        self.same_site = AllowedHostsOriginValidator(application)

    @property
    def allowed_origins(self) -> list[str]:
        return settings.WEBCHAT_ALLOWED_ORIGINS

    def valid_origin(self, parsed_origin: ParseResult | None) -> bool:
        if parsed_origin is None:
            return True
        return super().valid_origin(parsed_origin) or self.same_site.valid_origin(parsed_origin)


websocket_urlpatterns = [
    path("ws/chat/", WidgetOriginValidator(VisitorConsumer.as_asgi())),
    path("ws/console/", AllowedHostsOriginValidator(ConsoleConsumer.as_asgi())),
]

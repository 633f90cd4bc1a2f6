"""Websocket routes. The visitor and console consumers arrive with the web chat."""

from django.urls import URLPattern

websocket_urlpatterns: list[URLPattern] = []

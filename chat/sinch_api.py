"""A client for the parts of the Sinch Conversation API that cpweb calls.

- the platform name of a customer: the contact's ``display_name``
  (``GET /v1/projects/{project}/contacts/{contact_id}``) or a channel profile's
  ``profile_name`` (``POST /v1/projects/{project}/contacts:getChannelProfile``,
  for Messenger, Instagram, Viber and LINE);
- agent replies: ``POST /v1/projects/{project}/messages:send``.

Authentication is OAuth2 client credentials: the project's access key
(SINCH_KEY_ID / SINCH_KEY_SECRET) is exchanged at SINCH_AUTH_URL for a bearer
token, kept until shortly before it expires and renewed after a 401. Every
call has a short timeout (SINCH_API_TIMEOUT); it runs in ``chat.background``,
never where a webhook or a console waits.
"""

import threading
import time
from dataclasses import dataclass
from typing import Any

import httpx
from django.conf import settings

# Channels whose customer name comes from the channel-profile endpoint.
PROFILE_CHANNELS = frozenset({"MESSENGER", "INSTAGRAM", "VIBER", "LINE"})


class SinchApiError(Exception):
    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class SinchApiNotConfigured(SinchApiError):
    pass


@dataclass
class _Token:
    value: str
    expires_at: float


_tokens: dict[tuple[str, str], _Token] = {}
_tokens_lock = threading.Lock()


def configured() -> bool:
    return bool(settings.SINCH_KEY_ID and settings.SINCH_KEY_SECRET)


def _token(*, renew: bool = False) -> str:
    if not configured():
        raise SinchApiNotConfigured("Set SINCH_KEY_ID and SINCH_KEY_SECRET to call Sinch.")
    cache_key = (settings.SINCH_AUTH_URL, settings.SINCH_KEY_ID)
    with _tokens_lock:
        token = _tokens.get(cache_key)
        if token and not renew and token.expires_at > time.monotonic():
            return token.value
        try:
            response = httpx.post(
                settings.SINCH_AUTH_URL,
                data={"grant_type": "client_credentials"},
                auth=(settings.SINCH_KEY_ID, settings.SINCH_KEY_SECRET),
                timeout=settings.SINCH_API_TIMEOUT,
            )
        except httpx.HTTPError as exc:
            raise SinchApiError(f"Sinch authentication failed: {exc}") from exc
        if response.status_code != 200:
            raise SinchApiError(
                f"Sinch authentication answered {response.status_code}: {response.text[:200]}"
            )
        body = response.json()
        lifetime = float(body.get("expires_in") or 3600)
        _tokens[cache_key] = _Token(
            value=body["access_token"], expires_at=time.monotonic() + max(lifetime - 60, 1)
        )
        return body["access_token"]


def _call(method: str, path: str, *, project_id: str, json: Any = None) -> dict[str, Any]:
    project = settings.SINCH_PROJECT_ID or project_id
    if not project:
        raise SinchApiNotConfigured("Set SINCH_PROJECT_ID to call Sinch.")
    url = f"{settings.SINCH_API_BASE_URL.rstrip('/')}/v1/projects/{project}{path}"
    for attempt in range(2):
        headers = {"Authorization": f"Bearer {_token(renew=attempt > 0)}"}
        try:
            response = httpx.request(
                method, url, json=json, headers=headers, timeout=settings.SINCH_API_TIMEOUT
            )
        except httpx.HTTPError as exc:
            raise SinchApiError(f"{method} {path}: {exc!r}") from exc
        if response.status_code == 401 and attempt == 0:
            continue  # the token expired early or was revoked: renew once
        if response.status_code >= 300:
            raise SinchApiError(
                f"{method} {path} answered {response.status_code}: {response.text[:300]}",
                status=response.status_code,
            )
        try:
            data = response.json()
        except ValueError as exc:
            raise SinchApiError(f"{method} {path} answered with no JSON") from exc
        return data if isinstance(data, dict) else {}
    raise SinchApiError(f"{method} {path}: not authorised")


def contact_display_name(*, project_id: str, contact_id: str) -> str:
    contact = _call("GET", f"/contacts/{contact_id}", project_id=project_id)
    name = contact.get("display_name")
    return name if isinstance(name, str) else ""


def channel_profile_name(*, project_id: str, app_id: str, contact_id: str, channel: str) -> str:
    answer = _call(
        "POST",
        "/contacts:getChannelProfile",
        project_id=project_id,
        json={"app_id": app_id, "recipient": {"contact_id": contact_id}, "channel": channel},
    )
    name = answer.get("profile_name")
    return name if isinstance(name, str) else ""


def message_send(
    *, project_id: str, app_id: str, contact_id: str, channel: str, identity: str, text: str
) -> str:
    """Send a text to the customer on the channel they wrote from; Sinch's message id."""
    recipient: dict[str, Any] = (
        {"contact_id": contact_id}
        if contact_id
        else {"identified_by": {"channel_identities": [{"channel": channel, "identity": identity}]}}
    )
    answer = _call(
        "POST",
        "/messages:send",
        project_id=project_id,
        json={
            "app_id": app_id,
            "recipient": recipient,
            "message": {"text_message": {"text": text}},
            "channel_priority_order": [channel],
        },
    )
    message_id = answer.get("message_id")
    return message_id if isinstance(message_id, str) else ""

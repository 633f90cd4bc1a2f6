import json

import pytest

from chat import events
from tests.crm_standin import SECRET, CrmStandIn, start_crm


@pytest.fixture
def crm() -> CrmStandIn:
    """The CRM's webhook endpoint: a real HTTP server on a port of its own."""
    standin = start_crm()
    yield standin
    standin.stop()


@pytest.fixture
def crm_mode(settings, crm):
    """CP_MODE=crm, the webhook pointed at the stand-in, timings short enough for tests."""
    settings.CP_MODE = "crm"
    settings.CRM_WEBHOOK_URL = crm.url
    settings.CRM_WEBHOOK_SECRET = SECRET
    settings.CRM_WEBHOOK_TIMEOUT = 0.5
    settings.CRM_RETRY_BASE_SECONDS = 0.05
    settings.CRM_RETRY_MAX_SECONDS = 0.2
    settings.CRM_POLL_SECONDS = 0.02
    return settings


@pytest.fixture
def pushed(monkeypatch):
    """The console frames chat.events publishes, decoded, in order."""
    frames: list[dict] = []
    monkeypatch.setattr(events, "_send", lambda event: frames.append(json.loads(event["console"])))
    return frames

"""Faults a single real daphne meets: a Sinch profile fetch that hangs.

Redis, PostgreSQL and daphne workers failing under several workers are in
tests/deploy/test_faults.py and test_cross_process.py.
"""

import time

from tests.e2e.test_channels import _sinch_message, console  # noqa: F401 - a fixture


async def test_a_hanging_sinch_profile_fetch_delays_only_the_name(server, sinch_api, console):  # noqa: F811
    """Lost: nothing. Sinch's API takes 3 s a call (within SINCH_API_TIMEOUT): the
    webhook is answered at once, the console gets the conversation identified
    without the platform name, then ``updated`` with it when the fetch returns."""
    sinch_api.add_contact("E2E-SLOW-PROFILE", "Priya Slowfetch")
    sinch_api.delay = 3.0
    try:
        began = time.monotonic()
        response = await _sinch_message(
            server, channel="WHATSAPP", identity="447700900456", contact_id="E2E-SLOW-PROFILE"
        )
        assert response.status_code == 200, response.text
        assert time.monotonic() - began < 2.5  # not held by the fetch (3 s, twice with the token)
        first = await console.conversation("identified", "WHATSAPP", "+447700900456")
        assert first["identity"]["display_name"] == "+447700900456"
        assert first["identity"]["name_source"] == "identifier"
        named = await console.receive_until(
            lambda f: (
                f["type"] == "conversation"
                and f["event"] == "updated"
                and f["conversation"]["id"] == first["id"]
            ),
            timeout=20,
        )
        assert named["conversation"]["identity"]["display_name"] == "Priya Slowfetch"
        assert named["conversation"]["identity"]["name_source"] == "platform"
    finally:
        sinch_api.delay = 0.0

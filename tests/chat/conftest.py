import pytest
from channels.db import database_sync_to_async
from channels.layers import channel_layers
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import Permission, User
from django.db import connections
from django.test import Client

from chat import limits
from chat.hub import stop_hub
from cpweb.asgi import application
from cpweb.db import close_pool

ORIGIN = (b"origin", b"http://127.0.0.1:8000")


@pytest.fixture(autouse=True)
async def fresh_hub_and_layer(request):
    """Each test runs in its own event loop: give it its own layer and hub."""
    channel_layers.backends.clear()
    limits.reset()
    yield
    await stop_hub()
    # Connections persist (CONN_MAX_AGE); close the database threads' so the
    # test database can be dropped at the end of the run.
    if request.node.get_closest_marker("django_db"):
        await database_sync_to_async(connections.close_all)()
        close_pool()
    for layer in channel_layers.backends.values():
        # channels-redis: connections and the subscriber task belong to this loop
        await layer.flush()
    channel_layers.backends.clear()


def _session_cookie(user: User) -> bytes:
    client = Client()
    client.force_login(user)
    return f"sessionid={client.cookies['sessionid'].value}".encode()


@pytest.fixture
def agent_cookie(transactional_db) -> bytes:
    user = User.objects.create_user("agent", password="agent-pass-123")
    user.user_permissions.add(Permission.objects.get(codename="view_conversation"))
    return _session_cookie(user)


@pytest.fixture
def staff_cookie(transactional_db) -> bytes:
    user = User.objects.create_user("intern", password="intern-pass-123", is_staff=True)
    return _session_cookie(user)


class Socket:
    """A websocket client of the ASGI app, disconnected by the fixture that made it."""

    def __init__(self, communicator: WebsocketCommunicator) -> None:
        self.communicator = communicator

    async def send(self, frame: dict) -> None:
        await self.communicator.send_json_to(frame)

    async def send_text(self, text: str) -> None:
        await self.communicator.send_to(text_data=text)

    async def receive(self, timeout: float = 3) -> dict:
        return await self.communicator.receive_json_from(timeout=timeout)

    async def nothing(self, timeout: float = 0.3) -> bool:
        return await self.communicator.receive_nothing(timeout=timeout)

    async def receive_until(self, predicate, timeout: float = 3) -> dict:
        while True:
            frame = await self.receive(timeout)
            if predicate(frame):
                return frame


@pytest.fixture
async def connect():
    opened: list[WebsocketCommunicator] = []

    async def open_socket(
        path: str, *, cookie: bytes | None = None, origin=ORIGIN, client=None, headers=()
    ) -> Socket:
        headers = [*([origin] if origin else []), *headers]
        if cookie:
            headers.append((b"cookie", cookie))
        communicator = WebsocketCommunicator(application, path, headers=headers)
        if client:  # the peer address, as daphne puts it in the scope
            communicator.scope["client"] = [client, 50000]
        connected, _ = await communicator.connect()
        assert connected
        opened.append(communicator)
        return Socket(communicator)

    yield open_socket
    for communicator in opened:
        await communicator.disconnect()


@pytest.fixture
def sync():
    """Run ORM code from an async test in a thread, as consumers do."""
    from channels.db import database_sync_to_async

    def run(function, *args, **kwargs):
        return database_sync_to_async(function)(*args, **kwargs)

    return run

"""chat.wire: the ready-made frames the hub writes to every console.

The direct path itself runs under daphne only: tests/e2e/test_pushes.py.
"""

import pytest
from websockets.frames import Frame, Opcode

from chat.wire import frame_writer, text_frame


@pytest.mark.parametrize("chars", [0, 1, 125, 126, 65_535, 65_536, 70_000])
@pytest.mark.parametrize("char", ["a", "é", "😀"])
def test_a_frame_is_byte_for_byte_what_the_websockets_library_sends(chars, char):
    # Lengths straddle the 7-bit, 16-bit and 64-bit length forms, in bytes not
    # characters (é is 2 bytes, 😀 is 4).
    text = char * chars
    expected = Frame(Opcode.TEXT, text.encode()).serialize(mask=False, extensions=[])
    assert text_frame(text) == expected


async def test_under_another_server_pushes_take_the_asgi_path():
    async def send(message):  # e.g. uvicorn's, or Channels' test communicator's
        pass

    assert frame_writer(send) is None

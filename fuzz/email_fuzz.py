"""Coverage-guided fuzzing (atheris, libFuzzer) of the inbound email parser.

Whatever bytes arrive, ``parse_email`` returns a message with a From address
and some text, or raises MalformedEmail (the webhook then keeps the raw bytes
as a RejectedEmail).

    .venv/bin/python fuzz/email_fuzz.py -max_total_time=600 fuzz/corpus/email
    .venv/bin/python fuzz/email_fuzz.py -runs=5000 fuzz/corpus/email   # what CI runs
"""

import os
import sys
import tempfile
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cpweb.settings")
os.environ.setdefault("CPWEB_VAR_DIR", tempfile.mkdtemp(prefix="cpweb-fuzz-"))

import django

django.setup()

with atheris.instrument_imports(include=["chat.webhooks", "email_validator", "bs4"]):
    from chat.webhooks.email import MalformedEmail, parse_email

# The stdlib email package does most of the parsing: instrument it too.
import email._header_value_parser  # noqa: E402
import email.feedparser  # noqa: E402

for module in (email._header_value_parser, email.feedparser):
    for value in vars(module).values():
        if callable(value) and getattr(value, "__module__", None) == module.__name__:
            try:
                atheris.instrument_func(value)
            except Exception:  # noqa: S112 - classes and builtins cannot be instrumented
                continue


def one_input(data: bytes) -> None:
    try:
        parsed = parse_email(data)
    except MalformedEmail as error:
        assert error.code and error.message
        return
    assert "@" in parsed.from_address, parsed
    assert parsed.text


if __name__ == "__main__":
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()

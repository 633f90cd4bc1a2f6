"""``POST /webhooks/email/``: an inbound email as a raw RFC 5322 message (SPEC §5).

The mail system (an MTA pipe, a relay's "raw MIME" webhook) POSTs the message
as it arrived, ``Content-Type: message/rfc822``, with
``Authorization: Bearer <EMAIL_INBOUND_TOKEN>``. The customer is identified by
the From address; its display name is kept as an unverified claim. Headers
are decoded (RFC 2047 encoded words, RFC 6532 UTF-8 headers, internationalised
domains); the console shows the plain-text part, or text taken from the HTML
part. Replies thread into their conversation through Message-ID,
In-Reply-To and References.

Answers: 200 ``{"conversation_id", "message_id", "duplicate"}``; 400 with a
reason for a message that cannot be read, which is stored whole
(``RejectedEmail``, in admin) so it is not lost; 401 without the token; 413
over EMAIL_INBOUND_MAX_BYTES; 415 for a body that is not a raw message.
"""

import logging
import re
from dataclasses import dataclass, field
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.parser import BytesParser

from bs4 import BeautifulSoup
from django.conf import settings
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from chat import services
from chat.models import storable_text
from chat.webhooks.common import (
    BodyTooLarge,
    bearer_token_valid,
    counts_rejections,
    error,
    read_body,
    too_large,
)
from directory.normalize import IdentifierError, normalize_email

log = logging.getLogger(__name__)

ACCEPTED_CONTENT_TYPES = frozenset({"", "message/rfc822", "text/plain", "application/octet-stream"})
MAX_TEXT_CHARS = 100_000
_MESSAGE_ID = re.compile(r"<([^<>\s]+)>")
_BLOCK_TAGS = ["p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote",
               "pre", "table", "hr"]  # fmt: skip


class MalformedEmail(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class ParsedEmail:
    from_address: str
    from_name: str
    from_header: str
    subject: str
    header_message_id: str
    # In-Reply-To first, then References newest first: the likeliest parent first.
    references: list[str] = field(default_factory=list)
    text: str = ""


def _unescape(value: str) -> str:
    """UTF-8 header bytes the parser kept as surrogate escapes, as text."""
    return storable_text(value.encode("utf-8", "surrogateescape").decode("utf-8", "replace"))


def _message_ids(value: object) -> list[str]:
    return _MESSAGE_ID.findall(_unescape(str(value))) if value else []


def html_to_text(html: str) -> str:
    soup = BeautifulSoup(html, "html.parser")
    for hidden in soup(["script", "style", "head", "title"]):
        hidden.decompose()
    for tag in soup.find_all(_BLOCK_TAGS):
        tag.insert_after("\n")
    lines = (" ".join(line.split()) for line in soup.get_text().splitlines())
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def _content(part: EmailMessage) -> str:
    try:
        content = part.get_content()
    # An unknown or lying charset; a charset with a NUL in its name is a
    # ValueError (found by fuzz/email_fuzz.py).
    except (LookupError, ValueError):
        payload = part.get_payload(decode=True)
        content = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else ""
    return content if isinstance(content, str) else ""


def body_text(message: EmailMessage) -> str:
    """The plain-text body, or the HTML body's text; attachments named after it."""
    body = message.get_body(preferencelist=("plain", "html"))
    text = ""
    if body is not None:
        content = _content(body)  # type: ignore[arg-type]
        text = html_to_text(content) if body.get_content_type() == "text/html" else content.strip()
    try:
        attachments = [
            _unescape(part.get_filename() or part.get_content_type())
            for part in message.iter_attachments()
        ]
    except (LookupError, ValueError):
        # A multipart whose declared charset cannot even be looked up (a NUL in
        # its name, found by fuzz/email_fuzz.py): the text is still worth having.
        attachments = ["(unreadable)"]
    if attachments:
        text = "\n".join([text, *(f"[attachment: {name}]" for name in attachments)]).strip()
    return storable_text(text or "[no text]")[:MAX_TEXT_CHARS] or "[no text]"


def parse_email(raw: bytes) -> ParsedEmail:
    """Read an RFC 5322 message; MalformedEmail says why one cannot be used."""
    if not raw.strip():
        raise MalformedEmail("empty", "The body is empty; send the raw message.")
    try:
        message = BytesParser(policy=policy.default).parsebytes(raw)
    except Exception as exc:
        # The stdlib parser itself fails on some malformed parameters
        # (IndexError in get_parameter, found by fuzz/email_fuzz.py).
        raise MalformedEmail("unreadable", f"The message cannot be parsed: {exc!r}") from exc
    if not message.keys():
        raise MalformedEmail("no_headers", "No RFC 5322 header fields before the body.")
    try:
        from_header = message["From"]
        addresses: tuple[Address, ...] = from_header.addresses if from_header else ()
    except (ValueError, IndexError, AttributeError) as exc:
        raise MalformedEmail("invalid_from", f"The From header cannot be read: {exc}") from exc
    if from_header is None:
        raise MalformedEmail("missing_from", "The message has no From header.")
    mailbox = next((a for a in addresses if a.username and a.domain), None)
    if mailbox is None:
        raise MalformedEmail(
            "invalid_from", f"The From header holds no address: {_unescape(str(from_header))!r}"
        )
    address = _unescape(mailbox.addr_spec)
    try:
        normalize_email(address)
    except IdentifierError as exc:
        raise MalformedEmail("invalid_from", f"From {address!r}: {exc.message}") from exc
    try:
        subject = _unescape(str(message.get("Subject", "")))
        own_ids = _message_ids(message.get("Message-ID"))
        references = _message_ids(message.get("In-Reply-To")) + list(
            reversed(_message_ids(message.get("References")))
        )
    except (ValueError, IndexError) as exc:
        raise MalformedEmail("invalid_header", f"A header cannot be read: {exc}") from exc
    return ParsedEmail(
        from_address=address,
        from_name=_unescape(mailbox.display_name or ""),
        from_header=_unescape(str(from_header)),
        subject=" ".join(subject.split()),
        header_message_id=own_ids[0] if own_ids else "",
        references=list(dict.fromkeys(references)),
        text=body_text(message),
    )


def _rejected(raw: bytes, code: str, reason: str) -> JsonResponse:
    stored = services.email_reject(raw=raw, code=code, reason=reason)
    # The reason may quote the sender's address: it is on the stored row for
    # admins, never in the log (no raw identifiers in logs).
    log.warning("inbound email rejected (%s, kept as #%s)", code, stored.pk)
    return error(400, code, reason, rejected_email_id=stored.pk)


@csrf_exempt
@counts_rejections("email")
@require_POST
def email_webhook(request: HttpRequest) -> JsonResponse:
    if not settings.EMAIL_INBOUND_TOKEN:
        return error(503, "not_configured", "Set EMAIL_INBOUND_TOKEN to accept inbound email.")
    if not bearer_token_valid(request, settings.EMAIL_INBOUND_TOKEN):
        return error(401, "unauthorized", "Send 'Authorization: Bearer <EMAIL_INBOUND_TOKEN>'.")
    content_type = request.content_type or ""
    if content_type.lower() not in ACCEPTED_CONTENT_TYPES:
        return error(415, "unsupported_media_type",
                     f"Send the raw message as message/rfc822, not {content_type}.")  # fmt: skip
    try:
        raw = read_body(request, settings.EMAIL_INBOUND_MAX_BYTES)
    except BodyTooLarge:
        return too_large(settings.EMAIL_INBOUND_MAX_BYTES)
    try:
        parsed = parse_email(raw)
    except MalformedEmail as exc:
        return _rejected(raw, exc.code, exc.message)
    except Exception as exc:
        # The stdlib parser has corners nobody has mapped; the message is kept
        # for an admin either way, never lost to a 500 the mail system retries.
        log.warning("inbound email could not be parsed (%s)", type(exc).__name__)
        return _rejected(raw, "unreadable", f"The message could not be read: {exc!r}")
    try:
        conversation, message, duplicate = services.email_receive(
            from_address=parsed.from_address,
            from_name=parsed.from_name,
            from_header=parsed.from_header,
            subject=parsed.subject,
            header_message_id=parsed.header_message_id,
            references=parsed.references,
            text=parsed.text,
        )
    except IdentifierError as exc:
        return _rejected(raw, "invalid_from", exc.message)
    return JsonResponse(
        {
            "conversation_id": str(conversation.pk),
            "message_id": message.pk if message else None,
            "duplicate": duplicate,
        }
    )

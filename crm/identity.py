"""The CRM's answer and the identity object (SPEC §1, §2, CRM-integrated mode).

Pure functions: no database, no I/O.
"""

import copy
import json
from dataclasses import dataclass

from django.core.exceptions import ValidationError
from django.core.validators import URLValidator

from directory.identify import Identity

MAX_NAME = 200
MAX_URL = 2000
CRM_REASON = "; the name is the CRM's"


@dataclass(frozen=True)
class CrmAnswer:
    display_name: str | None
    record_url: str | None


def answer_parse(body: bytes) -> CrmAnswer | None:
    """``{"display_name": ..., "record_url": ...}`` from a 2xx webhook answer, if it holds one.

    Anything else (an empty body, other JSON, a record_url that is not http(s))
    is ignored: the delivery still counts, the identity stays as it is.
    """
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(data, dict):
        return None
    name = data.get("display_name")
    name = " ".join(name.split())[:MAX_NAME] if isinstance(name, str) else ""
    url = data.get("record_url")
    url = url.strip() if isinstance(url, str) else ""
    if url:
        try:
            # The console renders it as a link: never javascript: or data:.
            URLValidator(schemes=["http", "https"])(url)
        except ValidationError:
            url = ""
    if len(url) > MAX_URL:
        url = ""
    if not name and not url:
        return None
    return CrmAnswer(display_name=name or None, record_url=url or None)


def identity_with_answer(identity: Identity, answer: CrmAnswer) -> Identity:
    """The identity as the CRM names it: its display name, and a link to its record."""
    updated = copy.deepcopy(identity)
    if answer.display_name:
        updated["display_name"] = answer.display_name
        updated["name_source"] = "crm"
        if not updated["reason"].endswith(CRM_REASON):
            updated["reason"] += CRM_REASON
    crm = updated.get("crm")
    if answer.record_url and crm is not None:
        crm["record_url"] = answer.record_url
    return updated


def identity_keep_answer(new: Identity, old: Identity) -> Identity:
    """A re-identified ``new`` identity that keeps what the CRM said in ``old``.

    In CRM mode the CRM names the customer; a directory change must not flip
    the console back to the directory's name until the CRM answers again.
    """
    old_crm, new_crm = old.get("crm"), new.get("crm")
    if old_crm is None or new_crm is None or old_crm.get("value") != new_crm.get("value"):
        return new
    answer = CrmAnswer(
        display_name=old["display_name"] if old.get("name_source") == "crm" else None,
        record_url=old_crm.get("record_url"),
    )
    if answer.display_name is None and answer.record_url is None:
        return new
    return identity_with_answer(new, answer)

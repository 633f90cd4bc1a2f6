"""Pages a CRM may show in a frame (SPEC §1: the console embedded in the CRM).

Only the CRM's origin (CRM_ORIGIN) may frame them; with no CRM_ORIGIN they
keep Django's ``X-Frame-Options: DENY`` like every other page.
"""

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponseBase


def frameable_by_crm(view: Callable[..., HttpResponseBase]) -> Callable[..., HttpResponseBase]:
    @wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        response = view(request, *args, **kwargs)
        if settings.CRM_ORIGIN:
            # CSP frame-ancestors names the origin; X-Frame-Options cannot.
            response["Content-Security-Policy"] = f"frame-ancestors 'self' {settings.CRM_ORIGIN}"
            response.xframe_options_exempt = True  # type: ignore[attr-defined]
        return response

    return wrapped

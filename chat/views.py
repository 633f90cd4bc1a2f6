"""The demo site that embeds the widget (SPEC §3) and the agent console page (SPEC §4)."""

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from crm.framing import frameable_by_crm


def demo_site(request: HttpRequest) -> HttpResponse:
    return render(request, "demo/index.html", {"server": request.build_absolute_uri("/")[:-1]})


@frameable_by_crm  # a CRM may embed the console in a frame (SPEC §1, CRM mode)
@login_required
def console(request: HttpRequest) -> HttpResponse:
    if not request.user.has_perm("chat.view_conversation"):
        raise PermissionDenied("The console needs the 'view conversation' permission.")
    return render(
        request,
        "console/index.html",
        {
            "config": {
                "mode": settings.CP_MODE,
                "crmOrigin": settings.CRM_ORIGIN,
                "crmScreenpopUrl": settings.CRM_SCREENPOP_URL,
                "adminUrl": "/admin/directory/contact/",
                "canAddContacts": request.user.has_perm("directory.add_contact"),
                "username": request.user.get_username(),
            }
        },
    )

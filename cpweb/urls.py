from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from chat import views as chat_views
from chat.admin import identification_insights_view
from chat.webhooks.email import email_webhook
from chat.webhooks.sinch_conversation import sinch_conversation_webhook
from chat.webhooks.sinch_voice import sinch_voice_webhook
from cpweb.health import healthz
from cpweb.metrics import metrics_view
from crm.framing import frameable_by_crm
from directory import views as directory_views

urlpatterns = [
    path("", chat_views.demo_site, name="demo-site"),
    path("console/", chat_views.console, name="console"),
    path(
        "admin/insights/",
        admin.site.admin_view(identification_insights_view),
        name="admin-insights",
    ),
    path("admin/", admin.site.urls),
    # An agent signs in inside the CRM's frame too.
    path("accounts/login/", frameable_by_crm(auth_views.LoginView.as_view()), name="login"),
    path("accounts/", include("django.contrib.auth.urls")),
    path("api/identify", directory_views.identify_view, name="api-identify"),
    path(
        "webhooks/sinch/conversation/",
        sinch_conversation_webhook,
        name="webhook-sinch-conversation",
    ),
    path("webhooks/sinch/voice/", sinch_voice_webhook, name="webhook-sinch-voice"),
    path("webhooks/email/", email_webhook, name="webhook-email"),
    path("healthz", healthz, name="healthz"),
    path("metrics", metrics_view, name="metrics"),
]

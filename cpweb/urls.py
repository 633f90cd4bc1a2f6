from django.contrib import admin
from django.urls import include, path

from chat import views as chat_views
from directory import views as directory_views

urlpatterns = [
    path("", chat_views.demo_site, name="demo-site"),
    path("console/", chat_views.console, name="console"),
    path("admin/", admin.site.urls),
    path("accounts/", include("django.contrib.auth.urls")),
    path("api/identify", directory_views.identify_view, name="api-identify"),
]

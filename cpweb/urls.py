from django.contrib import admin
from django.urls import include, path

from directory import views as directory_views

urlpatterns = [
    path("admin/", admin.site.urls),
    path("accounts/", include("django.contrib.auth.urls")),
    path("api/identify", directory_views.identify_view, name="api-identify"),
]

from django.contrib import admin
from django.contrib.auth.decorators import login_required
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView
from rest_framework.permissions import IsAuthenticated

from config.health import healthz
from config.login import throttle_admin_login

admin.site.site_header = "Arbiter administration"
admin.site.site_title = "Arbiter admin"
throttle_admin_login(admin.site)  # the admin's login form guesses passwords as well as ours

SAFE = ["get", "head"]

urlpatterns = [
    path("healthz", healthz, name="healthz"),
    path("admin/", admin.site.urls),
    path("api/v1/", include("annotation.api_urls")),
    path("api/v1/", include("modeling.api_urls")),
    # The schema, like the docs that read it, is for signed-in users. The docs pages answer GET
    # only: DRF's OPTIONS on them tried to render its metadata through their HTML template (500).
    path("api/schema/", SpectacularAPIView.as_view(permission_classes=[IsAuthenticated]), name="api-schema"),
    path("api/docs/", login_required(SpectacularSwaggerView.as_view(url_name="api-schema", http_method_names=SAFE)), name="api-docs"),
    path("api/redoc/", login_required(SpectacularRedocView.as_view(url_name="api-schema", http_method_names=SAFE)), name="api-redoc"),
    path("", include("annotation.urls")),
    path("", include("modeling.urls")),
]

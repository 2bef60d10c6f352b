from django.contrib import admin
from django.urls import include, path

admin.site.site_header = "Arbiter administration"
admin.site.site_title = "Arbiter admin"

urlpatterns = [
    path("admin/", admin.site.urls),
    path("", include("annotation.urls")),
    path("", include("modeling.urls")),
]

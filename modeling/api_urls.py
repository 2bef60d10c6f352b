from django.urls import path
from rest_framework.routers import SimpleRouter

from modeling import apis

router = SimpleRouter()
router.register("members", apis.CommitteeMemberViewSet, basename="member")

urlpatterns = [
    path("projects/<slug:slug>/sampling/", apis.SamplingApi.as_view(), name="api-sampling"),
    *router.urls,
]

from django.urls import path
from rest_framework.routers import SimpleRouter

from modeling import apis

router = SimpleRouter()
router.register("members", apis.CommitteeMemberViewSet, basename="member")

urlpatterns = [
    path("projects/<slug:slug>/sampling/", apis.SamplingApi.as_view(), name="api-sampling"),
    path("projects/<slug:slug>/committee/", apis.ProjectCommitteeApi.as_view(), name="api-project-committee"),
    path("projects/<slug:slug>/judge/", apis.JudgeApi.as_view(), name="api-judge"),
    path("projects/<slug:slug>/rounds/", apis.RoundsApi.as_view(), name="api-rounds"),
    path("rounds/<int:round_id>/", apis.RoundDetailApi.as_view(), name="api-round"),
    path("rounds/<int:round_id>/retry/", apis.RoundActionApi.as_view(action="retry"), name="api-round-retry"),
    path("rounds/<int:round_id>/cancel/", apis.RoundActionApi.as_view(action="cancel"), name="api-round-cancel"),
    path("projects/<slug:slug>/dialogue/", apis.DialogueApi.as_view(), name="api-dialogue"),
    path("dialogues/<int:dialogue_id>/turns/", apis.DialogueTurnApi.as_view(), name="api-dialogue-turns"),
    path("dialogues/<int:dialogue_id>/end/", apis.DialogueEndApi.as_view(), name="api-dialogue-end"),
    path("live-turns/<int:turn_id>/", apis.LiveTurnApi.as_view(), name="api-live-turn"),
    path("live-turns/<int:turn_id>/redraw/", apis.LiveTurnRedrawApi.as_view(), name="api-live-turn-redraw"),
    *router.urls,
]

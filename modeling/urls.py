from django.urls import path

from modeling import views

urlpatterns = [
    path("p/<slug:slug>/rounds/", views.rounds, name="rounds"),
    path("p/<slug:slug>/rounds/start/", views.round_start_view, name="round-start"),
    path("p/<slug:slug>/rounds/schedule/", views.round_schedule_view, name="round-schedule"),
    path("p/<slug:slug>/rounds/<int:round_id>/retry/", views.round_action_view, {"action": "retry"}, name="round-retry"),
    path("p/<slug:slug>/rounds/<int:round_id>/cancel/", views.round_action_view, {"action": "cancel"}, name="round-cancel"),
]

from django.urls import path

from modeling import views

urlpatterns = [
    path("committee/", views.committee, name="committee"),
    path("committee/add/", views.committee_add, name="committee-add"),
    path("committee/<int:member_id>/settings/", views.committee_member_settings, name="committee-member-settings"),
    path("committee/<int:member_id>/active/", views.committee_member_active, name="committee-member-active"),
    path("committee/<int:member_id>/test/", views.committee_member_test, name="committee-member-test"),
    path("p/<slug:slug>/committee/<int:member_id>/weight/", views.project_member_weight, name="project-member-weight"),
    path("p/<slug:slug>/committee/<int:member_id>/test/", views.project_member_test, name="project-member-test"),
    path("p/<slug:slug>/rounds/", views.rounds, name="rounds"),
    path("p/<slug:slug>/rounds/start/", views.round_start_view, name="round-start"),
    path("p/<slug:slug>/rounds/schedule/", views.round_schedule_view, name="round-schedule"),
    path("p/<slug:slug>/rounds/<int:round_id>/retry/", views.round_action_view, {"action": "retry"}, name="round-retry"),
    path("p/<slug:slug>/rounds/<int:round_id>/cancel/", views.round_action_view, {"action": "cancel"}, name="round-cancel"),
]

from django.contrib.auth import views as auth_views
from django.urls import path

from annotation import views
from config.login import ThrottledLoginView

urlpatterns = [
    path("", views.home, name="home"),
    path("login/", ThrottledLoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("projects/new/", views.project_new, name="project-new"),
    path("p/<slug:slug>/", views.project_overview, name="project"),
    path("p/<slug:slug>/settings/", views.project_settings, name="project-settings"),
    path("p/<slug:slug>/join/", views.study_join, name="study-join"),
    path("p/<slug:slug>/label/", views.label, name="label"),
    path("p/<slug:slug>/label/today/", views.label_today, name="label-today"),
    path("p/<slug:slug>/live/", views.label_live, name="label-live"),
    path("p/<slug:slug>/label/today/<int:judgment_id>/", views.judgment_change_view, name="judgment-change"),
    path("p/<slug:slug>/import/", views.import_upload, name="import-upload"),
    path("p/<slug:slug>/comparisons/", views.comparisons_list, name="comparisons"),
    path("p/<slug:slug>/comparisons/<int:comparison_id>/", views.comparison_page, name="comparison"),
    path("p/<slug:slug>/comparisons/<int:comparison_id>/gold/", views.comparison_gold_view, name="comparison-gold"),
    path("p/<slug:slug>/quality/", views.quality, name="quality"),
    path("p/<slug:slug>/quality/threshold/", views.quality_threshold, name="quality-threshold"),
    path("p/<slug:slug>/quality/fit/", views.quality_fit, name="quality-fit"),
    path("p/<slug:slug>/quality/judge/", views.quality_judge, name="quality-judge"),
    path("p/<slug:slug>/quality/labelers/<path:username>/", views.labeler_profile, name="labeler-profile"),
    path("p/<slug:slug>/leaderboard/", views.leaderboard, name="leaderboard"),
    path("p/<slug:slug>/snapshots/<int:snapshot_id>/download/", views.snapshot_download, name="snapshot-download"),
    path("audit/", views.audit_log, name="audit-log"),
]

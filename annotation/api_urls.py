from django.urls import path

from annotation import apis

urlpatterns = [
    path("projects/", apis.ProjectListApi.as_view(), name="api-projects"),
    path("projects/<slug:slug>/prompts/", apis.PromptListApi.as_view(), name="api-prompts"),
    path("projects/<slug:slug>/comparisons/", apis.ComparisonListApi.as_view(), name="api-comparisons"),
    path("projects/<slug:slug>/judgments/", apis.JudgmentListApi.as_view(), name="api-judgments"),
    path("projects/<slug:slug>/next/", apis.NextApi.as_view(), name="api-next"),
    path("projects/<slug:slug>/queue/", apis.QueueStatusApi.as_view(), name="api-queue"),
    path("assignments/<int:assignment_id>/submit/", apis.SubmitApi.as_view(), name="api-submit"),
    path("assignments/<int:assignment_id>/skip/", apis.SkipApi.as_view(), name="api-skip"),
    path("projects/<slug:slug>/judgments/mine/", apis.MyJudgmentsApi.as_view(), name="api-my-judgments"),
    path("judgments/<int:judgment_id>/change/", apis.JudgmentChangeApi.as_view(), name="api-judgment-change"),
    path("projects/<slug:slug>/imports/", apis.ImportApi.as_view(), name="api-imports"),
    path("projects/<slug:slug>/exports/", apis.ExportsApi.as_view(), name="api-exports"),
    path("projects/<slug:slug>/reliability/", apis.ReliabilityApi.as_view(), name="api-reliability"),
    path("exports/<int:snapshot_id>/download/", apis.ExportDownloadApi.as_view(), name="api-export-download"),
]

"""Project APIs: labeling (next, submit, skip; the page uses them), imports and exports."""

from __future__ import annotations

import dataclasses

from django.urls import reverse
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import generics, status
from rest_framework.parsers import MultiPartParser
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView

from annotation import selectors, services
from annotation.access import ProjectRolePermission, has_role
from annotation.exports import ExportError
from annotation.importers import ImportValidationError
from annotation.models import DatasetSnapshot, Judgment, Project, Role, SnapshotPurpose
from annotation.selectors import project_list_for
from annotation.serializers import (
    AssignmentSerializer,
    ComparisonReadSerializer,
    ErrorSerializer,
    ExportSerializer,
    ExportStartSerializer,
    JudgmentReadSerializer,
    JudgmentChangeSerializer,
    JudgmentResultSerializer,
    MyJudgmentSerializer,
    NextSerializer,
    ProjectSerializer,
    PromptSerializer,
    QueueStatusSerializer,
    ReliabilityFitSerializer,
    SkipSerializer,
    SubmitSerializer,
)
from annotation.services.exports import export_start
from annotation.services.participants import is_participant, participant_exit_url
from annotation.services.reliability import reliability_fit_latest, reliability_fit_start
from annotation.services.review import judgment_change, labeler_judgments_recent
from annotation.services.uploads import IMPORT_FORMATS, import_file, upload_too_large
from annotation.views import snapshot_file_response

ERRORS = {code: OpenApiResponse(ErrorSerializer) for code in (400, 403, 404, 409)}
SUBMIT_ERRORS = {**ERRORS, 422: OpenApiResponse(ErrorSerializer, description="The Idempotency-Key was used for a different verdict")}


def _error(exc: services.LabelingError) -> Response:
    return Response({"error": exc.code, "detail": exc.detail}, status=exc.status)


class NextApi(APIView):
    permission_classes = [IsAuthenticated, ProjectRolePermission]
    minimum_role = Role.LABELER

    @extend_schema(
        request=NextSerializer,
        responses={
            200: AssignmentSerializer,
            204: OpenApiResponse(description="Nothing to label; for a study participant who is done, the header X-Redirect says where to go"),
            **ERRORS, 429: OpenApiResponse(ErrorSerializer),
        },
        summary="Lease the next comparison",
    )
    def post(self, request, slug: str):
        params = NextSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        if exit_url := participant_exit_url(user=request.user, project_id=self.project.pk):
            return Response(status=status.HTTP_204_NO_CONTENT, headers={"X-Redirect": exit_url})
        try:
            assignment = services.comparison_lease_next(
                project=self.project, labeler=request.user, exclude=tuple(params.validated_data.get("exclude", ()))
            )
        except services.LabelingError as exc:
            return _error(exc)
        progress = selectors.labeler_progress(project=self.project, labeler=request.user)
        if assignment is None:
            return Response(status=status.HTTP_204_NO_CONTENT, headers={"X-Progress-Done-Today": progress["done_today"]})
        payload = selectors.assignment_payload(assignment=assignment, project=self.project)
        return Response({**payload, "progress": progress})


class QueueStatusApi(APIView):
    """Why the queue is empty for the caller: the labeling page asks when ``next`` answers 204."""

    permission_classes = [IsAuthenticated, ProjectRolePermission]
    minimum_role = Role.LABELER

    @extend_schema(responses={200: QueueStatusSerializer}, summary="Why there is nothing to label")
    def get(self, request, slug: str):
        from modeling.selectors import sampling_active, sampling_progress

        run = sampling_active(project=self.project)
        status_ = selectors.labeling_queue_status(
            project=self.project, labeler=request.user,
            sampling=sampling_progress(run=run) if run else None,
            pending_prompts=selectors.pending_prompts(project=self.project).count(),
        )
        is_lead = has_role(user=request.user, project=self.project, minimum=Role.LEAD)
        status_["project_url"] = reverse("project", kwargs={"slug": self.project.slug}) if is_lead else None
        return Response(QueueStatusSerializer(status_).data)


class SubmitApi(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema(request=SubmitSerializer, responses={201: JudgmentResultSerializer, 200: JudgmentResultSerializer, **SUBMIT_ERRORS}, summary="Submit a judgment")
    def post(self, request, assignment_id: int):
        body = SubmitSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        fields = dict(body.validated_data)
        key = request.headers.get("Idempotency-Key") or fields.pop("idempotency_key")
        fields.pop("idempotency_key", None)
        want_next = fields.pop("next")
        try:
            judgment, created = services.judgment_submit(
                assignment_id=assignment_id,
                labeler=request.user,
                verdict=services.Verdict(**fields, idempotency_key=key),
            )
        except services.LabelingError as exc:
            return _error(exc)
        # ``edited_response``, not its id: a swapped repeat answers with an edit that is never saved.
        result = {"judgment": judgment.pk, "created": created, "edited": judgment.edited_response is not None}
        # A study participant who is done leaves for the study's exit. Asked of participants only:
        # a replayed judgment's comparison is not loaded, and reading it would cost a query.
        if is_participant(request.user) and (exit_url := participant_exit_url(user=request.user, project_id=judgment.comparison.project_id)):
            result.update(redirect=exit_url, next=None)
        elif want_next:
            # After the judgment's transaction committed: a failure to lease never costs the label.
            result.update(_next_after(judgment=judgment, labeler=request.user))
        return Response(result, status=status.HTTP_201_CREATED if created else status.HTTP_200_OK)


def _next_after(*, judgment, labeler) -> dict:
    """The labeler's next comparison in the judgment's project, for ``submit`` with ``next: true``.

    The submit already proved the labeler's membership (their own assignment in a project they
    belong to), which is all ``next`` asks of a labeler. No ``exclude`` here, so the lease cap
    cannot refuse: a labeler at the cap gets their own oldest open lease back.
    """
    # A raw read of one row: an ORM get() compiled per request cost more than the query.
    (project,) = Project.objects.raw("SELECT * FROM annotation_project WHERE id = %s", [judgment.comparison.project_id])
    assignment = services.comparison_lease_next(project=project, labeler=labeler)
    if assignment is None:
        return {"next": None}
    progress = selectors.labeler_progress(project=project, labeler=labeler)
    return {"next": {**selectors.assignment_payload(assignment=assignment, project=project), "progress": progress}}


class SkipApi(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema(request=SkipSerializer, responses={200: OpenApiResponse(description="Skipped"), **ERRORS}, summary="Skip a comparison")
    def post(self, request, assignment_id: int):
        body = SkipSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            assignment = services.assignment_skip(
                assignment_id=assignment_id, labeler=request.user, reason=body.validated_data["reason"]
            )
        except services.LabelingError as exc:
            return _error(exc)
        return Response({"assignment": assignment.pk, "state": assignment.state})


class MyJudgmentsApi(APIView):
    """The caller's own judgments of the last 24 hours in a project, newest first, and until when each can change."""

    permission_classes = [IsAuthenticated, ProjectRolePermission]
    minimum_role = Role.LABELER

    @extend_schema(responses=MyJudgmentSerializer(many=True), summary="Your judgments of the last 24 hours")
    def get(self, request, slug: str):
        return Response(MyJudgmentSerializer(labeler_judgments_recent(project=self.project, labeler=request.user), many=True).data)


class JudgmentChangeApi(APIView):
    """Change your own verdict within the project's window; 409 change_window_passed after it."""

    permission_classes = [IsAuthenticated]

    @extend_schema(request=JudgmentChangeSerializer, responses={200: OpenApiResponse(description="Changed"), **ERRORS}, summary="Change your verdict")
    def post(self, request, judgment_id: int):
        body = JudgmentChangeSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            judgment = judgment_change(judgment_id=judgment_id, labeler=request.user, **body.validated_data)
        except services.LabelingError as exc:
            return _error(exc)
        return Response({"judgment": judgment.pk, "strength": judgment.strength, "changed_at": judgment.changed_at})


class ExportsApi(APIView):
    """Exports of a project (leads): start one, list them. Download with ``exports/<id>/download/``."""

    permission_classes = [IsAuthenticated, ProjectRolePermission]
    minimum_role = Role.LEAD

    @extend_schema(responses=ExportSerializer(many=True), summary="Exports of a project, newest first")
    def get(self, request, slug: str):
        exports = list(self.project.snapshots.filter(purpose=SnapshotPurpose.EXPORT)[:50])
        # "number": the export's place in the project (1, 2, ...). The id also counts the rounds'
        # snapshots, so a project's first export read as #4.
        total = self.project.snapshots.filter(purpose=SnapshotPurpose.EXPORT).count()
        rows = ExportSerializer(exports, many=True).data
        for position, row in enumerate(rows):
            row["number"] = total - position
        return Response(rows)

    @extend_schema(request=ExportStartSerializer, responses={202: ExportSerializer, 400: OpenApiResponse(ErrorSerializer)}, summary="Start an export")
    def post(self, request, slug: str):
        body = ExportStartSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            snapshot = export_start(project=self.project, user=request.user, **body.validated_data)
        except ExportError as exc:
            return Response({"error": "invalid_filters", "detail": str(exc)}, status=status.HTTP_400_BAD_REQUEST)
        return Response(ExportSerializer(snapshot).data, status=status.HTTP_202_ACCEPTED)


class ReliabilityApi(APIView):
    """The project's labeler-reliability fit (leads): GET the newest finished one, POST to queue a
    new one on the default worker (or get the one already queued or running)."""

    permission_classes = [IsAuthenticated, ProjectRolePermission]
    minimum_role = Role.LEAD

    @extend_schema(responses={200: ReliabilityFitSerializer, 404: OpenApiResponse(ErrorSerializer)}, summary="The newest reliability fit")
    def get(self, request, slug: str):
        fit = reliability_fit_latest(project=self.project)
        if fit is None:
            return Response({"error": "not_found", "detail": "No finished reliability fit yet: POST here to start one"}, status=status.HTTP_404_NOT_FOUND)
        return Response(ReliabilityFitSerializer(fit).data)

    @extend_schema(request=None, responses={202: ReliabilityFitSerializer}, summary="Fit labeler reliability")
    def post(self, request, slug: str):
        fit = reliability_fit_start(project=self.project, user=request.user)
        return Response(ReliabilityFitSerializer(fit).data, status=status.HTTP_202_ACCEPTED)


class ExportDownloadApi(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema(responses={(200, "application/octet-stream"): OpenApiResponse(description="The file, byte for byte")}, summary="Download an export")
    def get(self, request, snapshot_id: int):
        snapshot = DatasetSnapshot.objects.select_related("project").filter(pk=snapshot_id).first()
        if snapshot is None or not has_role(user=request.user, project=snapshot.project, minimum=Role.LEAD):
            return Response({"error": "not_found", "detail": "No such export"}, status=status.HTTP_404_NOT_FOUND)
        return snapshot_file_response(snapshot, user=request.user)


class ImportApi(APIView):
    """Upload a prompt file (jsonl, csv, mt-bench) or HH-RLHF transcripts (hh). All or nothing."""

    permission_classes = [IsAuthenticated, ProjectRolePermission]
    minimum_role = Role.LEAD
    parser_classes = [MultiPartParser]

    @extend_schema(
        request={"multipart/form-data": {"type": "object", "properties": {"file": {"type": "string", "format": "binary"}, "format": {"type": "string", "enum": list(IMPORT_FORMATS)}}}},
        responses={201: OpenApiResponse(description="What was written"), 400: OpenApiResponse(description="Line errors; nothing written")},
        summary="Import a file",
    )
    def post(self, request, slug: str):
        upload, format = request.FILES.get("file"), request.data.get("format", "")
        if upload is None:
            return Response({"error": "invalid", "detail": "send the file as multipart field 'file'"}, status=status.HTTP_400_BAD_REQUEST)
        too_large = upload_too_large(size=upload.size)
        if too_large:
            return Response({"error": "too_large", "detail": too_large}, status=status.HTTP_400_BAD_REQUEST)
        try:
            result = import_file(project=self.project, file=upload, name=upload.name, format=format)
        except ImportValidationError as exc:
            return Response(
                {"error": "invalid_file", "detail": str(exc), "total": exc.total,
                 "errors": [{"line": e.line, "field": e.field, "message": e.message} for e in exc.errors]},
                status=status.HTTP_400_BAD_REQUEST,
            )
        return Response(dataclasses.asdict(result), status=status.HTTP_201_CREATED)


class ProjectListApi(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema(responses=ProjectSerializer(many=True), summary="Projects you have a role in, with that role")
    def get(self, request):
        data = [{**{f: getattr(p, f) for f in ProjectSerializer().fields if f != "role"}, "role": role} for p, role in project_list_for(user=request.user)]
        return Response(ProjectSerializer(data, many=True).data)


class _ProjectListing(generics.ListAPIView):
    """A paginated, read-only listing of one project's rows, for leads and admins."""

    permission_classes = [IsAuthenticated, ProjectRolePermission]
    minimum_role = Role.LEAD


class PromptListApi(_ProjectListing):
    serializer_class = PromptSerializer

    def get_queryset(self):
        return self.project.prompts.order_by("id")


class ComparisonListApi(_ProjectListing):
    serializer_class = ComparisonReadSerializer

    def get_queryset(self):
        return self.project.comparisons.order_by("id")


class JudgmentListApi(_ProjectListing):
    serializer_class = JudgmentReadSerializer

    def get_queryset(self):
        return Judgment.objects.filter(comparison__project=self.project).select_related("labeler").order_by("id")

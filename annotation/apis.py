"""Labeling API: next, submit, skip. The same rules as the page (the page uses this API)."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView

from annotation import selectors, services
from annotation.access import ProjectRolePermission
from annotation.models import Role
from annotation.serializers import (
    AssignmentSerializer,
    ErrorSerializer,
    JudgmentResultSerializer,
    NextSerializer,
    SkipSerializer,
    SubmitSerializer,
)

ERRORS = {code: OpenApiResponse(ErrorSerializer) for code in (400, 403, 404, 409)}


def _error(exc: services.LabelingError) -> Response:
    return Response({"error": exc.code, "detail": exc.detail}, status=exc.status)


class NextApi(APIView):
    permission_classes = [IsAuthenticated, ProjectRolePermission]
    minimum_role = Role.LABELER

    @extend_schema(
        request=NextSerializer,
        responses={200: AssignmentSerializer, 204: OpenApiResponse(description="Nothing to label"), **ERRORS, 429: OpenApiResponse(ErrorSerializer)},
        summary="Lease the next comparison",
    )
    def post(self, request, slug: str):
        params = NextSerializer(data=request.data)
        params.is_valid(raise_exception=True)
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


class SubmitApi(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema(request=SubmitSerializer, responses={201: JudgmentResultSerializer, 200: JudgmentResultSerializer, **ERRORS}, summary="Submit a judgment")
    def post(self, request, assignment_id: int):
        body = SubmitSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        fields = dict(body.validated_data)
        key = request.headers.get("Idempotency-Key") or fields.pop("idempotency_key")
        fields.pop("idempotency_key", None)
        try:
            judgment, created = services.judgment_submit(
                assignment_id=assignment_id,
                labeler=request.user,
                verdict=services.Verdict(**fields, idempotency_key=key),
            )
        except services.LabelingError as exc:
            return _error(exc)
        result = {"judgment": judgment.pk, "created": created, "edited": judgment.edited_response_id is not None}
        return Response(result, status=status.HTTP_201_CREATED if created else status.HTTP_200_OK)


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

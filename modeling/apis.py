"""Modeling API: sampling runs per project (leads) and the committee (admins)."""

from django.core.exceptions import ValidationError as DjangoValidationError
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, permissions, status, viewsets
from rest_framework.response import Response
from rest_framework.views import APIView

from annotation.access import ProjectRolePermission
from annotation.models import Role
from modeling.models import CommitteeMember
from modeling.serializers import CommitteeMemberSerializer, SamplingRunSerializer, SamplingStartSerializer
from modeling.services import SamplingError, member_register, member_set_active, sampling_start


class SamplingApi(APIView):
    permission_classes = [permissions.IsAuthenticated, ProjectRolePermission]
    minimum_role = Role.LEAD

    @extend_schema(responses=SamplingRunSerializer(many=True), summary="Recent sampling runs, newest first")
    def get(self, request, slug: str):
        runs = self.project.sampling_runs.all()[:20]
        return Response(SamplingRunSerializer(runs, many=True).data)

    @extend_schema(request=SamplingStartSerializer, responses={202: SamplingRunSerializer}, summary="Start sampling")
    def post(self, request, slug: str):
        body = SamplingStartSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            run = sampling_start(project=self.project, user=request.user, **body.validated_data)
        except SamplingError as exc:
            return Response({"error": "conflict", "detail": str(exc)}, status=status.HTTP_409_CONFLICT)
        return Response(SamplingRunSerializer(run).data, status=status.HTTP_202_ACCEPTED)


class CommitteeMemberViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.CreateModelMixin, mixins.UpdateModelMixin, viewsets.GenericViewSet
):
    """The committee is shared by all projects: staff admins register, reweigh and retire members."""

    queryset = CommitteeMember.objects.all()
    serializer_class = CommitteeMemberSerializer
    permission_classes = [permissions.IsAdminUser]

    def perform_create(self, serializer):
        try:
            serializer.instance = member_register(**serializer.validated_data)
        except DjangoValidationError as exc:
            from rest_framework.exceptions import ValidationError

            raise ValidationError(exc.message_dict) from None

    def perform_update(self, serializer):
        active = serializer.validated_data.pop("is_active", None)
        member = serializer.save()
        if active is not None and active != member.is_active:
            member_set_active(member=member, active=active)

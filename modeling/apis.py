"""Modeling API: sampling runs per project (leads) and the committee (admins)."""

from django.core.exceptions import ValidationError as DjangoValidationError
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, permissions, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response
from rest_framework.views import APIView

from annotation.access import ProjectRolePermission
from annotation.models import Role
from annotation.serializers import ErrorSerializer
from modeling.models import CommitteeMember, Round
from modeling.selectors import human_evaluation
from modeling.serializers import (
    CommitteeMemberSerializer,
    DialogueSerializer,
    DialogueStartSerializer,
    JudgeRunSerializer,
    JudgeStartSerializer,
    JudgeStatusSerializer,
    LiveTurnSerializer,
    TurnStartSerializer,
    MemberTestSerializer,
    ProjectCommitteeSerializer,
    RoundSerializer,
    RoundStartSerializer,
    SamplingRunSerializer,
    SamplingStartSerializer,
)
from modeling.services import live
from modeling.services import (
    JudgeBusy,
    JudgeError,
    MemberTestBusy,
    MemberTestError,
    RoundConflict,
    RoundError,
    SamplingError,
    judge_start,
    member_register,
    member_set_active,
    member_test_start,
    member_update,
    round_cancel,
    round_retry,
    round_start,
    sampling_start,
)


class SamplingApi(APIView):
    permission_classes = [permissions.IsAuthenticated, ProjectRolePermission]
    minimum_role = Role.LEAD

    @extend_schema(responses=SamplingRunSerializer(many=True), summary="Recent sampling runs, newest first")
    def get(self, request, slug: str):
        runs = self.project.sampling_runs.all()[:20]
        return Response(SamplingRunSerializer(runs, many=True).data)

    @extend_schema(request=SamplingStartSerializer, responses={202: SamplingRunSerializer, 409: ErrorSerializer}, summary="Start sampling")
    def post(self, request, slug: str):
        body = SamplingStartSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            run = sampling_start(project=self.project, user=request.user, **body.validated_data)
        except SamplingError as exc:
            return Response({"error": "conflict", "detail": str(exc)}, status=status.HTTP_409_CONFLICT)
        return Response(SamplingRunSerializer(run).data, status=status.HTTP_202_ACCEPTED)


class JudgeApi(APIView):
    """The project's LLM judge: its latest runs and its agreement with labelers (GET), or queue
    it on the comparisons it has not judged (POST)."""

    permission_classes = [permissions.IsAuthenticated, ProjectRolePermission]
    minimum_role = Role.LEAD

    @extend_schema(responses=JudgeStatusSerializer, summary="The judge's latest runs and its agreement with labelers")
    def get(self, request, slug: str):
        from annotation.judging import project_judge_agreement

        runs = self.project.judge_runs.select_related("member")[:10]
        return Response({"runs": JudgeRunSerializer(runs, many=True).data, "agreement": project_judge_agreement(project=self.project)})

    @extend_schema(request=JudgeStartSerializer, responses={202: JudgeRunSerializer, 400: ErrorSerializer, 409: ErrorSerializer},
                   summary="Judge the comparisons the judge has not judged")
    def post(self, request, slug: str):
        body = JudgeStartSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            run = judge_start(project=self.project, user=request.user, limit=body.validated_data["limit"])
        except JudgeBusy as exc:
            return Response({"error": "conflict", "detail": str(exc)}, status=status.HTTP_409_CONFLICT)
        except JudgeError as exc:
            return Response({"error": "invalid", "detail": str(exc)}, status=status.HTTP_400_BAD_REQUEST)
        return Response(JudgeRunSerializer(run).data, status=status.HTTP_202_ACCEPTED)


class ProjectCommitteeApi(APIView):
    permission_classes = [permissions.IsAuthenticated, ProjectRolePermission]
    minimum_role = Role.LEAD

    @extend_schema(responses=ProjectCommitteeSerializer(many=True), summary="The active members, with their weight in this project")
    def get(self, request, slug: str):
        from modeling.selectors import project_committee

        return Response(ProjectCommitteeSerializer(project_committee(project=self.project), many=True).data)


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
        fields = dict(serializer.validated_data)
        active = fields.pop("is_active", None)
        try:
            member = member_update(member=serializer.instance, **fields)
        except DjangoValidationError as exc:
            from rest_framework.exceptions import ValidationError

            raise ValidationError(exc.message_dict) from None
        if active is not None and active != member.is_active:
            member_set_active(member=member, active=active)
        serializer.instance = member

    @extend_schema(request=MemberTestSerializer, responses={202: CommitteeMemberSerializer, 400: ErrorSerializer, 409: ErrorSerializer},
                   summary="Test a member with one prompt (the answer appears in last_test)")
    @action(detail=True, methods=["post"])
    def test(self, request, pk=None):
        body = MemberTestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        member = self.get_object()
        try:
            member_test_start(member=member, prompt=body.validated_data["prompt"], user=request.user)
        except MemberTestError as exc:
            code = status.HTTP_409_CONFLICT if isinstance(exc, MemberTestBusy) else status.HTTP_400_BAD_REQUEST
            return Response({"error": "member_test", "detail": str(exc)}, status=code)
        return Response(CommitteeMemberSerializer(member).data, status=status.HTTP_202_ACCEPTED)


def _round_for(request, round_id: int):
    """The round, if the caller is an admin of its project; 404 otherwise (no existence leak)."""
    from django.http import Http404

    from annotation.access import has_role

    round_ = Round.objects.select_related("project").filter(pk=round_id).first()
    if round_ is None or not has_role(user=request.user, project=round_.project, minimum=Role.ADMIN):
        raise Http404("No such round")
    return round_


class RoundsApi(APIView):
    permission_classes = [permissions.IsAuthenticated, ProjectRolePermission]
    minimum_role = Role.ADMIN

    @extend_schema(responses=RoundSerializer(many=True), summary="Rounds of a project, newest first")
    def get(self, request, slug: str):
        rounds = list(self.project.rounds.select_related("policy_member").prefetch_related("snapshots"))
        return Response(RoundSerializer(rounds, many=True, context={"human_evaluation": human_evaluation(rounds=rounds)}).data)

    @extend_schema(request=RoundStartSerializer, responses={202: RoundSerializer, 400: ErrorSerializer, 409: ErrorSerializer}, summary="Start a retraining round")
    def post(self, request, slug: str):
        body = RoundStartSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            round_ = round_start(
                project=self.project, user=request.user, config=body.validated_data["config"], preset=body.validated_data["preset"]
            )
        except RoundError as exc:
            code = status.HTTP_409_CONFLICT if isinstance(exc, RoundConflict) else status.HTTP_400_BAD_REQUEST
            return Response({"error": "round", "detail": str(exc)}, status=code)
        return Response(RoundSerializer(round_).data, status=status.HTTP_202_ACCEPTED)


class RoundDetailApi(APIView):
    permission_classes = [permissions.IsAuthenticated]

    @extend_schema(responses=RoundSerializer, summary="One round, with its log and metrics")
    def get(self, request, round_id: int):
        return Response(RoundSerializer(_round_for(request, round_id)).data)


class RoundActionApi(APIView):
    permission_classes = [permissions.IsAuthenticated]
    action = ""

    @extend_schema(request=None, responses={200: RoundSerializer, 409: ErrorSerializer}, summary="Retry or cancel a round")
    def post(self, request, round_id: int):
        round_ = _round_for(request, round_id)
        try:
            round_ = (round_retry if self.action == "retry" else round_cancel)(round_=round_, user=request.user)
        except RoundError as exc:
            return Response({"error": "round", "detail": str(exc)}, status=status.HTTP_409_CONFLICT)
        return Response(RoundSerializer(round_).data)


# --- live dialogues (the labeling page in live mode polls these) -----------------------------------


def _live_error(exc) -> Response:
    return Response({"error": exc.code, "detail": exc.detail}, status=exc.status)


class DialogueApi(APIView):
    """The caller's open dialogue in a project (GET, to resume), or a new one with its first turn (POST)."""

    permission_classes = [permissions.IsAuthenticated, ProjectRolePermission]
    minimum_role = Role.LABELER

    @extend_schema(responses={200: DialogueSerializer, 204: None}, summary="Your open live dialogue")
    def get(self, request, slug: str):
        dialogue = live.dialogue_resume(project=self.project, labeler=request.user)
        if dialogue is None:
            return Response(status=status.HTTP_204_NO_CONTENT)
        return Response(DialogueSerializer(live.dialogue_view(dialogue=dialogue)).data)

    @extend_schema(request=DialogueStartSerializer, responses={201: LiveTurnSerializer, 400: ErrorSerializer, 409: ErrorSerializer},
                   summary="Start a live dialogue with its first turn")
    def post(self, request, slug: str):
        body = DialogueStartSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            turn = live.dialogue_start(project=self.project, labeler=request.user, **body.validated_data)
        except live.LiveError as exc:
            return _live_error(exc)
        return Response(LiveTurnSerializer(live.turn_view(turn=turn)).data, status=status.HTTP_201_CREATED)


def _dialogue_for(request, dialogue_id: int):
    """The caller's dialogue in a project they still belong to; 404 otherwise."""
    from annotation.access import has_role
    from annotation.models import Dialogue

    dialogue = Dialogue.objects.select_related("project").filter(pk=dialogue_id, labeler=request.user).first()
    if dialogue is None or not has_role(user=request.user, project=dialogue.project, minimum=Role.LABELER):
        raise live.LiveNotFound("No such dialogue for you")
    return dialogue


class DialogueTurnApi(APIView):
    permission_classes = [permissions.IsAuthenticated]

    @extend_schema(request=TurnStartSerializer, responses={201: LiveTurnSerializer, 400: ErrorSerializer, 404: ErrorSerializer, 409: ErrorSerializer},
                   summary="Write the next turn of your dialogue")
    def post(self, request, dialogue_id: int):
        body = TurnStartSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            dialogue = _dialogue_for(request, dialogue_id)
            turn = live.turn_start(dialogue=dialogue, labeler=request.user, text=body.validated_data["text"])
        except live.LiveError as exc:
            return _live_error(exc)
        return Response(LiveTurnSerializer(live.turn_view(turn=turn)).data, status=status.HTTP_201_CREATED)


class DialogueEndApi(APIView):
    permission_classes = [permissions.IsAuthenticated]

    @extend_schema(request=None, responses={200: DialogueSerializer, 404: ErrorSerializer}, summary="End your dialogue")
    def post(self, request, dialogue_id: int):
        try:
            dialogue = live.dialogue_end(dialogue=_dialogue_for(request, dialogue_id), labeler=request.user)
        except live.LiveError as exc:
            return _live_error(exc)
        return Response(DialogueSerializer(live.dialogue_view(dialogue=dialogue)).data)


class LiveTurnApi(APIView):
    """Polled by the page while both answers grow: one row read."""

    permission_classes = [permissions.IsAuthenticated]

    @extend_schema(responses={200: LiveTurnSerializer, 404: ErrorSerializer}, summary="A live turn's answers so far")
    def get(self, request, turn_id: int):
        view = live.turn_poll(turn_id=turn_id, labeler=request.user)
        if view is None:
            return Response({"error": "not_found", "detail": "No such live turn for you"}, status=status.HTTP_404_NOT_FOUND)
        return Response(view)  # already plain JSON types: no serializer pass on the hot path


class LiveTurnRedrawApi(APIView):
    permission_classes = [permissions.IsAuthenticated]

    @extend_schema(request=None, responses={201: LiveTurnSerializer, 404: ErrorSerializer, 409: ErrorSerializer},
                   summary="Drop a turn's answers and ask a new pair of members")
    def post(self, request, turn_id: int):
        try:
            turn = live.turn_redraw(turn_id=turn_id, labeler=request.user)
        except live.LiveError as exc:
            return _live_error(exc)
        return Response(LiveTurnSerializer(live.turn_view(turn=turn)).data, status=status.HTTP_201_CREATED)

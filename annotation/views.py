"""Pages. Thin: parse, call a selector or service, render."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlencode

from django.conf import settings
from django.contrib import messages
from django.contrib.admin.views.decorators import staff_member_required
from django.contrib.auth import login
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import FileResponse, Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST, require_safe

from annotation import charts, selectors
from annotation.access import project_page
from annotation.importers import ImportValidationError
from annotation.models import (
    MIN_GOLD_JUDGMENTS,
    AuditAction,
    AuditEvent,
    Comparison,
    ComparisonSource,
    DatasetSnapshot,
    JobState,
    Judgment,
    Project,
    Role,
    Strength,
)
from annotation.quality import project_leaderboard, project_quality
from annotation.rendering import render_markdown
from annotation.selectors import labeler_left, labeler_progress, pending_prompts, project_counts, project_list_for
from annotation.services import ATTRIBUTES, FLAGS, project_set_quality_threshold
from annotation.services.audit import audit_record
from annotation.forms import SETTINGS_FIELDS, ProjectCreateForm, ProjectSettingsForm, StudyJoinForm
from annotation.services.gold import GoldError, comparison_set_gold
from annotation.services.projects import project_create, project_update_settings
from annotation.services.labeling import LabelingError
from annotation.services.participants import NO_STUDY, JoinRefused, is_participant, participant_exit_url, participant_join
from annotation.judging import project_judge_agreement
from annotation.services.reliability import judgments_since_fit, reliability_fit_refresh, reliability_fit_start
from annotation.services.review import judgment_change, labeler_judgments_recent
from annotation.services.uploads import IMPORT_FORMATS, import_file, upload_too_large
from modeling.selectors import project_committee
from modeling.services.members import MEMBER_TEST_DEFAULT_PROMPT


@require_safe
@login_required
def home(request: HttpRequest) -> HttpResponse:
    projects = project_list_for(user=request.user)
    return render(request, "annotation/home.html", {"projects": projects, "may_create": _may_create_projects(request.user, projects)})


def _may_create_projects(user, projects) -> bool:
    """Staff, and anyone who leads or runs a project, may start another (and becomes its admin)."""
    return user.is_staff or user.is_superuser or any(role in (Role.LEAD, Role.ADMIN) for _, role in projects)


@require_http_methods(["GET", "POST"])
@login_required
def project_new(request: HttpRequest) -> HttpResponse:
    if not _may_create_projects(request.user, project_list_for(user=request.user)):
        raise PermissionDenied("Creating a project needs the lead or admin role in a project, or staff")
    form = ProjectCreateForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        project = project_create(created_by=request.user, creator_role=Role.ADMIN, **form.cleaned_data)
        messages.success(request, f"Project '{project.name}' created; you are its admin. Import prompts below.")
        return redirect("project", slug=project.slug)
    return render(request, "annotation/project_new.html", {"form": form})


@require_http_methods(["GET", "POST"])
@project_page(Role.LEAD)
def project_settings(request: HttpRequest, project, role) -> HttpResponse:
    form = ProjectSettingsForm(request.POST or None, instance=Project.objects.get(pk=project.pk))
    if request.method == "POST" and form.is_valid():
        changed = project_update_settings(project=project, changes={f: form.cleaned_data[f] for f in SETTINGS_FIELDS}, user=request.user)
        messages.success(request, f"Saved: {', '.join(changed)}." if changed else "Nothing changed.")
        return redirect("project-settings", slug=project.slug)
    return render(request, "annotation/project_settings.html", {"project": project, "role": role, "form": form})


#: The eight choices, left to right as on screen: 1-4 for A from strongest, 5-8 for B to strongest.
CHOICES = [
    ("1", "left", Strength.SIGNIFICANTLY_BETTER, "A ≫ significantly better"),
    ("2", "left", Strength.BETTER, "A > better"),
    ("3", "left", Strength.SLIGHTLY_BETTER, "A ≳ slightly better"),
    ("4", "left", Strength.NEGLIGIBLY_BETTER, "A ≈ negligibly / unsure"),
    ("5", "right", Strength.NEGLIGIBLY_BETTER, "B ≈ negligibly / unsure"),
    ("6", "right", Strength.SLIGHTLY_BETTER, "B ≳ slightly better"),
    ("7", "right", Strength.BETTER, "B > better"),
    ("8", "right", Strength.SIGNIFICANTLY_BETTER, "B ≫ significantly better"),
]
FLAG_LABELS = {
    "unsafe": "Unsafe",
    "factually_wrong": "Factually wrong",
    "private_data": "Contains private data",
    "refuses_needlessly": "Refuses needlessly",
}


@require_GET  # a GET with an effect: platforms send participants here by a plain link
def study_join(request: HttpRequest, slug: str) -> HttpResponse:
    """A study participant enters (annotation/services/participants.py): signed in as the
    project's labeler for their id, then on to the labeling page. Nothing is made for a bad link."""
    form = StudyJoinForm(request.GET)
    project = Project.objects.filter(slug=slug).first()
    try:
        if project is None or not project.study_open:
            raise JoinRefused(NO_STUDY, status=404)
        if not form.is_valid():
            raise JoinRefused("This study link is incomplete or malformed.", status=400)
        participant, _created = participant_join(project=project, join=form.join_request())
    except JoinRefused as exc:
        context = {"message": str(exc), "errors": form.errors if exc.status == 400 else {}}
        return render(request, "annotation/study_refused.html", context, status=exc.status)
    login(request, participant.user)
    return redirect("label", slug=project.slug)


def _participant_done(request: HttpRequest, project) -> HttpResponse | None:
    """A participant whose part is over is sent to the study's completion (or screen-out) URL."""
    url = participant_exit_url(user=request.user, project_id=project.pk)
    return redirect(url) if url else None


@require_safe
@project_page(Role.LABELER)
def label(request: HttpRequest, project, role) -> HttpResponse:
    return _participant_done(request, project) or render(request, "annotation/label.html", _label_context(request, project, role))


@require_safe
@project_page(Role.LABELER)
def label_live(request: HttpRequest, project, role) -> HttpResponse:
    """The labeling page in live mode: the labeler writes a turn, two members answer as they watch
    (modeling/services/live.py), then the same verdict and edit as any comparison, and on."""
    if not project.takes_written:
        messages.info(request, "This project takes imported prompts only: label them here.")
        return redirect("label", slug=project.slug)
    if done := _participant_done(request, project):
        return done
    from modeling.services.live import MAX_SYSTEM_PROMPT_CHARS, MAX_TURN_CHARS

    context = _label_context(request, project, role) | {
        "live": True, "max_turn_chars": MAX_TURN_CHARS, "max_system_chars": MAX_SYSTEM_PROMPT_CHARS,
    }
    return render(request, "annotation/label.html", context)


def _label_context(request: HttpRequest, project, role) -> dict:
    return {
        "project": project,
        "role": role,
        "progress": labeler_progress(project=project, labeler=request.user),
        "left_for_you": labeler_left(project=project, labeler=request.user),
        "guidelines_html": render_markdown(project.guidelines),
        "choices": CHOICES,
        "sides": [("left", "A"), ("right", "B")],
        "attributes": ATTRIBUTES,
        "flags": [(name, FLAG_LABELS[name]) for name in FLAGS],
        "scale": range(5),
        "live": False,
        "study_items": project.study_items if is_participant(request.user) else None,
    }


@require_safe
@project_page(Role.LABELER)
def label_today(request: HttpRequest, project, role) -> HttpResponse:
    """The labeler's own judgments of the last 24 hours, each with a form to change it while its window is open."""
    context = {
        "project": project, "role": role,
        "judgments": labeler_judgments_recent(project=project, labeler=request.user),
        "strengths": Strength.choices,
    }
    return render(request, "annotation/label_today.html", context)


@require_POST
@project_page(Role.LABELER)
def judgment_change_view(request: HttpRequest, project, role, judgment_id: int) -> HttpResponse:
    try:
        judgment_change(
            judgment_id=judgment_id, labeler=request.user, chosen=request.POST.get("chosen", ""),
            strength=request.POST.get("strength", ""), both_bad=request.POST.get("both_bad") == "on",
        )
        messages.success(request, f"Judgment #{judgment_id} changed; exports and the next round use the new verdict.")
    except LabelingError as exc:
        messages.error(request, f"Not changed: {exc.detail}")
    return redirect("label-today", slug=project.slug)


@require_safe
@project_page(Role.LEAD)
def comparisons_list(request: HttpRequest, project, role) -> HttpResponse:
    filters = {k: request.GET.get(k, "") for k in ("source", "gold", "labeled", "labeler")}
    browse = selectors.comparisons_browse(project=project, page=request.GET.get("page") or 1, **filters)
    query = urlencode({k: v for k, v in filters.items() if v})  # the filters, kept across pages
    context = {"project": project, "role": role, "browse": browse, "filters": filters, "query": query,
               "sources": ComparisonSource.choices}
    return render(request, "annotation/comparisons.html", context)


@require_safe
@project_page(Role.LEAD)
def comparison_page(request: HttpRequest, project, role, comparison_id: int) -> HttpResponse:
    detail = selectors.comparison_detail(project=project, comparison_id=comparison_id)
    if detail is None:
        raise Http404("No such comparison in this project")
    return render(request, "annotation/comparison.html", {"project": project, "role": role, **detail})


@require_POST
@project_page(Role.LEAD)
def comparison_gold_view(request: HttpRequest, project, role, comparison_id: int) -> HttpResponse:
    comparison = get_object_or_404(Comparison, pk=comparison_id, project=project)
    winner = request.POST.get("winner", "none")
    try:
        comparison_set_gold(comparison=comparison, winner=None if winner == "none" else winner, user=request.user)
        messages.success(request, f"Comparison #{comparison.pk}: " + ("not gold." if winner == "none" else f"gold, {winner.upper()} is the better answer."))
    except GoldError as exc:
        messages.error(request, f"Nothing changed: {exc}")
    return redirect("comparison", slug=project.slug, comparison_id=comparison.pk)


@require_safe
@project_page(Role.LEAD)
def project_overview(request: HttpRequest, project, role) -> HttpResponse:
    committee = project_committee(project=project)
    context = {
        "project": project,
        "role": role,
        "counts": project_counts(project=project),
        "pending_prompts": pending_prompts(project=project).count(),
        "import_formats": IMPORT_FORMATS,
        "memberships": project.memberships.select_related("user").order_by("role", "user__username"),
        "committee": committee,
        "answering": [m for m in committee if m.project_weight > 0],
        "default_test_prompt": MEMBER_TEST_DEFAULT_PROMPT,
    }
    return render(request, "annotation/project.html", context)


def snapshot_file_name(snapshot: DatasetSnapshot) -> str:
    """What a downloaded file is called: a round's snapshot says its round and what it trained
    ("demo-round-3-reward_model-trl-preference.jsonl"), an export its format and id."""
    if snapshot.round_id is not None:
        return (f"{snapshot.project.slug}-round-{snapshot.round.number}-{snapshot.purpose}-{snapshot.format}"
                f".{snapshot.file_format}")
    return f"{snapshot.project.slug}-{snapshot.format}-{snapshot.pk}.{snapshot.file_format}"


def snapshot_file_response(snapshot: DatasetSnapshot, *, user) -> FileResponse:
    """A snapshot's finished file, byte for byte as written (its sha256 is on record); the
    download goes in the audit log."""
    path = (Path(settings.ARTIFACTS_DIR) / snapshot.path).resolve()
    inside = path.is_relative_to(Path(settings.ARTIFACTS_DIR).resolve())
    if snapshot.state != JobState.SUCCEEDED or not snapshot.path or not inside or not path.is_file():
        raise Http404("This snapshot has no finished file")
    name = snapshot_file_name(snapshot)
    response = FileResponse(path.open("rb"), as_attachment=True, filename=name)
    response["X-Content-SHA256"] = snapshot.sha256
    audit_record(
        action=AuditAction.SNAPSHOT_DOWNLOADED, project=snapshot.project, actor=user, target=name,
        details={"snapshot": snapshot.pk, "purpose": snapshot.purpose, "format": snapshot.format, "rows": snapshot.row_count, "sha256": snapshot.sha256},
    )
    return response


@require_safe
@project_page(Role.LEAD)
def snapshot_download(request: HttpRequest, project, role, snapshot_id: int):
    return snapshot_file_response(get_object_or_404(DatasetSnapshot, pk=snapshot_id, project=project), user=request.user)


@require_POST
@project_page(Role.LEAD)
def import_upload(request: HttpRequest, project, role) -> HttpResponse:
    """The project page's upload form; the same service as the API and the command."""
    upload = request.FILES.get("file")
    if upload is None:
        messages.error(request, "Choose a file to import.")
    elif too_large := upload_too_large(size=upload.size):
        messages.error(request, too_large)
    else:
        try:
            result = import_file(project=project, file=upload, name=upload.name, format=request.POST.get("format", ""))
        except ImportValidationError as exc:
            listed = "; ".join(str(e) for e in exc.errors[:10])
            more = f" (and {exc.total - 10} more)" if exc.total > 10 else ""
            messages.error(request, f"Nothing was imported: {exc.total} problem(s). {listed}{more}")
        else:
            skipped = ""
            if result.skipped:
                more = f" (and {result.skipped_count - 10} more)" if result.skipped_count > 10 else ""
                skipped = " Skipped: " + "; ".join(result.skipped[:10]) + more + "."
            messages.success(
                request,
                f"Imported {result.prompts_created} prompts and {result.comparisons_created} comparisons; "
                f"{result.duplicates} duplicates and {result.skipped_count} unusable rows skipped.{skipped}",
            )
    return redirect("project", slug=project.slug)


@require_safe
@project_page(Role.LEAD)
def quality(request: HttpRequest, project, role) -> HttpResponse:
    stats = project_quality(project=project)
    # People read the scale's words, not its codes ("Slightly better", not slightly_better).
    labels = {s.value: s.label for s in Strength}
    for labeler in stats["labelers"]:
        labeler["strengths"] = {labels.get(k, k): v for k, v in labeler["strengths"].items()}
    fit, pending = reliability_fit_refresh(project=project)
    for labeler in stats["labelers"]:
        labeler["profile"] = fit.profiles.get(labeler["labeler"]) if fit else None
    context = {
        "project": project, "role": role, "q": stats, "fit": fit, "pending": pending,
        "judge": project_judge_agreement(project=project), "judge_run": project.judge_runs.select_related("member").first(),
        "since_fit": judgments_since_fit(project=project, fit=fit),
        "per_day_chart": charts.bars(stats["per_day"]),
        "strength_chart": charts.bars({s.label: stats["strengths"].get(s.value, 0) for s in Strength}),
        "has_gold": project.comparisons.filter(is_gold=True).exists(), "min_gold": MIN_GOLD_JUDGMENTS,
    }
    return render(request, "annotation/quality.html", context)


@require_safe
@project_page(Role.LEAD)
def labeler_profile(request: HttpRequest, project, role, username: str) -> HttpResponse:
    """One labeler's profile in a project: their biases, agreement, gold, time and flips, each with
    its interval and the test that flags it (from the newest reliability fit)."""
    # No username holds a NUL, and PostgreSQL refuses one in a query: a 404 before asking.
    if "\x00" in username or not Judgment.objects.filter(comparison__project=project, labeler__username=username).exists():
        raise Http404("No judgment of this labeler in this project")
    fit, pending = reliability_fit_refresh(project=project)
    profile = fit.profiles.get(username) if fit else None
    names = {s.value: s.label for s in Strength}
    strengths = None
    if profile:
        counts, share, n = profile["strengths"]["counts"], profile["strengths"]["project_share"], profile["judgments"]
        strengths = [
            {"name": names.get(k, k), "mine": counts.get(k, 0), "mine_share": round(counts.get(k, 0) / n, 3) if n else 0,
             "project_share": share.get(k, 0)}
            for k in [*Strength.values, "unknown"] if k in counts
        ]
    context = {
        "project": project, "role": role, "username": username, "fit": fit, "pending": pending, "p": profile,
        "strengths": strengths, "since_fit": judgments_since_fit(project=project, fit=fit),
        "last_failed": None if fit else project.reliability_fits.filter(state=JobState.FAILED).first(),
        "summary": fit.summary if fit else {},
    }
    return render(request, "annotation/labeler.html", context)


@require_POST
@project_page(Role.LEAD)
def quality_fit(request: HttpRequest, project, role) -> HttpResponse:
    reliability_fit_start(project=project, user=request.user)
    messages.success(request, "Fitting labeler reliability on the worker; this page shows it when it is done.")
    return redirect("quality", slug=project.slug)


@require_POST
@project_page(Role.LEAD)
def quality_judge(request: HttpRequest, project, role) -> HttpResponse:
    """Queue the project's judge on the comparisons it has not judged."""
    from modeling.services.judging import JudgeError, judge_start

    try:
        judge_start(project=project, user=request.user)
    except JudgeError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, "The judge is reading the new comparisons on the worker; this page shows its figures as it goes.")
    return redirect("quality", slug=project.slug)


@require_POST
@project_page(Role.LEAD)
def quality_threshold(request: HttpRequest, project, role) -> HttpResponse:
    try:
        project_set_quality_threshold(project=project, threshold=float(request.POST.get("threshold", "")))
        messages.success(request, "Threshold saved.")
    except ValueError:
        messages.error(request, "The threshold is a gold accuracy between 0 and 1; nothing changed.")
    return redirect("quality", slug=project.slug)


@require_safe
@project_page(Role.LEAD)
def leaderboard(request: HttpRequest, project, role) -> HttpResponse:
    category = request.GET.get("category") or None
    board = project_leaderboard(project=project, category=category)
    categories = sorted(set(project.prompts.exclude(category="").values_list("category", flat=True)))
    context = {"project": project, "role": role, "board": board, "chart": charts.intervals(board["members"]),
               "categories": categories, "category": category}
    return render(request, "annotation/leaderboard.html", context)


AUDIT_PAGE_SIZE = 100


@require_safe
@staff_member_required
def audit_log(request: HttpRequest) -> HttpResponse:
    """Who changed data or models, newest first, for admins; filter by project, action, actor."""
    events = AuditEvent.objects.select_related("project")
    project_slug, action, actor = request.GET.get("project", ""), request.GET.get("action", ""), request.GET.get("actor", "").strip()
    if project_slug:
        events = events.filter(project__slug=project_slug)
    if action in AuditAction.values:
        events = events.filter(action=action)
    if actor:
        events = events.filter(actor_name=actor)
    page = Paginator(events, AUDIT_PAGE_SIZE).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    context = {
        "page": page, "actions": AuditAction.choices, "projects": Project.objects.order_by("name").values_list("slug", "name"),
        "filters": {"project": project_slug, "action": action, "actor": actor}, "query": query.urlencode(),
    }
    return render(request, "annotation/audit.html", context)

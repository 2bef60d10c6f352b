"""Pages for rounds (project admins) and the committee (staff). Thin: parse the form, call a service, redirect with a message."""

from django.contrib import messages
from django.contrib.admin.views.decorators import staff_member_required
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST, require_safe

from annotation.access import project_page
from annotation.models import Role
from annotation.services import project_set_round_schedule
from config.untrusted import STRICT_JSON, json_refusal
from modeling.forms import MemberAddForm, MemberSettingsForm
from modeling.models import ACTIVE_ROUND_STATES, CommitteeMember, Round
from modeling.selectors import human_evaluation
from modeling.services import (
    MemberTestError,
    RoundError,
    member_register,
    member_set_active,
    member_set_project_weight,
    member_test_start,
    member_update,
    round_cancel,
    round_retry,
    round_start,
)

CHART_W, CHART_H, PAD = 560, 180, 28


def _chart(rounds) -> dict:
    """Points for an inline SVG across rounds: RM held-out accuracy, the new policy's win rate as
    the reward model judges it and as labelers judge it (with its 95% interval as a whisker)."""
    done = sorted((r for r in rounds if r.state == "succeeded"), key=lambda r: r.number)
    series = {"accuracy": [], "win_rate": [], "human": []}
    if not done:
        return {"series": series, "width": CHART_W, "height": CHART_H, "labels": []}
    step = (CHART_W - 2 * PAD) / max(1, len(done) - 1)
    y = lambda value: round(CHART_H - PAD - value * (CHART_H - 2 * PAD), 1)  # noqa: E731
    labels = []
    for i, r in enumerate(done):
        x = PAD + i * step
        labels.append({"x": round(x, 1), "text": r.number})
        accuracy = r.metrics.get("training_rm", {}).get("heldout", {}).get("accuracy")
        win_rate = r.metrics.get("evaluating", {}).get("win_rate")
        human = getattr(r, "human", None) or {}
        for name, value in (("accuracy", accuracy), ("win_rate", win_rate), ("human", human.get("win_rate"))):
            if value is not None:
                point = {"x": round(x, 1), "y": y(value), "v": value}
                if name == "human":
                    point.update(low=y(human["ci95"][0]), high=y(human["ci95"][1]), n=human["labels"], ci=human["ci95"],
                                 left=round(x - 4, 1), top=round(point["y"] - 4, 1))
                series[name].append(point)
    return {
        "series": series, "width": CHART_W, "height": CHART_H, "labels": labels,
        "polylines": {k: " ".join(f"{p['x']},{p['y']}" for p in v) for k, v in series.items()},
        "y_half": CHART_H / 2, "y_top": PAD, "y_bottom": CHART_H - PAD,
    }


@require_safe
@project_page(Role.ADMIN)
def rounds(request: HttpRequest, project, role) -> HttpResponse:
    rounds_ = list(project.rounds.select_related("policy_member").prefetch_related("snapshots"))
    human = human_evaluation(rounds=rounds_)
    for r in rounds_:
        r.human = human.get(r.pk)
    return render(
        request,
        "modeling/rounds.html",
        {
            "project": project, "role": role, "rounds": rounds_, "chart": _chart(rounds_),
            "latest": rounds_[0] if rounds_ else None,
            "latest_active": bool(rounds_) and rounds_[0].state in ACTIVE_ROUND_STATES,
        },
    )


@require_POST
@project_page(Role.ADMIN)
def round_start_view(request: HttpRequest, project, role) -> HttpResponse:
    """The rounds page's form: a preset, and for "custom" the standard settings with a JSON
    object of overrides on top (checked like the API's; a bad one changes nothing)."""
    preset, text = request.POST.get("preset", "quick"), request.POST.get("config", "").strip()
    try:
        overrides = {}
        if preset == "custom":
            preset, overrides = "standard", _custom_settings(text)
        if request.POST.get("aggregation", "each") != "each":  # the form's "Labels" choice; checked with the rest
            overrides = {**overrides, "aggregation": request.POST["aggregation"]}
        round_ = round_start(project=project, user=request.user, config=overrides, preset=preset)
        custom = ", custom" if set(overrides) - {"aggregation"} else ""
        labels = f", {round_.config['aggregation']} labels" if round_.config.get("aggregation", "each") != "each" else ""
        messages.success(request, f"Round {round_.number} ({round_.config['preset']}{custom}{labels}) queued for the gpu worker.")
    except RoundError as exc:
        messages.error(request, f"No round started: {exc}")
    return redirect("rounds", slug=project.slug)


MAX_CUSTOM_SETTINGS_CHARS = 10_000


def _custom_settings(text: str) -> dict:
    if len(text) > MAX_CUSTOM_SETTINGS_CHARS:
        raise RoundError(f"the custom settings are longer than {MAX_CUSTOM_SETTINGS_CHARS:,} characters")
    try:
        value = STRICT_JSON.decode(text or "{}")
    except (ValueError, RecursionError) as exc:
        raise RoundError(f"the custom settings are not JSON ({getattr(exc, 'msg', exc)})") from None
    if not isinstance(value, dict):
        raise RoundError('the custom settings must be a JSON object, e.g. {"rm": {"max_steps": 50}}')
    refusal = json_refusal(value)
    if refusal:
        raise RoundError(f"the custom settings: {refusal}")
    return value


@require_POST
@project_page(Role.ADMIN)
def round_action_view(request: HttpRequest, project, role, round_id: int, action: str) -> HttpResponse:
    round_ = get_object_or_404(Round, pk=round_id, project=project)
    try:
        (round_retry if action == "retry" else round_cancel)(round_=round_, user=request.user)
        messages.success(request, f"Round {round_.number}: {action} done.")
    except RoundError as exc:
        messages.error(request, str(exc))
    return redirect("rounds", slug=project.slug)


@require_POST
@project_page(Role.ADMIN)
def round_schedule_view(request: HttpRequest, project, role) -> HttpResponse:
    try:
        min_new = int(request.POST.get("round_min_new_judgments", ""))
        project_set_round_schedule(
            project=project, enabled=request.POST.get("round_schedule_enabled") == "on", min_new_judgments=min_new
        )
        messages.success(request, "Schedule saved.")
    except (ValueError, TypeError):
        messages.error(request, "The number of new judgments must be a whole number from 1 to 10,000,000.")
    return redirect("rounds", slug=project.slug)


# --- a project's committee (leads) -----------------------------------------------------------

def _send_test(request: HttpRequest, member: CommitteeMember) -> None:
    """The test form of either committee table: queue the prompt, say what happened."""
    try:
        member_test_start(member=member, prompt=request.POST.get("prompt", ""), user=request.user)
        messages.success(request, f"Prompt sent to {member.name}; its answer appears in its row of the committee table.")
    except MemberTestError as exc:
        messages.error(request, str(exc))


def _to_project_committee(project) -> HttpResponse:
    return redirect(f"{reverse('project', kwargs={'slug': project.slug})}#committee")


@require_POST
@project_page(Role.LEAD)
def project_member_weight(request: HttpRequest, project, role, member_id: int) -> HttpResponse:
    member = get_object_or_404(CommitteeMember, pk=member_id, is_active=True)
    try:
        weight = float(request.POST.get("weight", ""))
    except ValueError:
        messages.error(request, f"{member.name} was not changed: the weight must be a number from 0 to 1000.")
        return _to_project_committee(project)
    try:
        member_set_project_weight(project=project, member=member, weight=weight, user=request.user)
        messages.success(request, f"{member.name}: weight {weight:g} in this project" + (" (it will not answer here)." if weight == 0 else "."))
    except ValueError as exc:
        messages.error(request, f"{member.name} was not changed: {exc}")
    return _to_project_committee(project)


@require_POST
@project_page(Role.LEAD)
def project_member_test(request: HttpRequest, project, role, member_id: int) -> HttpResponse:
    _send_test(request, get_object_or_404(CommitteeMember, pk=member_id, is_active=True))
    return _to_project_committee(project)


# --- the committee (staff) -------------------------------------------------------------------

def _committee_context(add_form=None) -> dict:
    from django.db.models import Count

    from modeling.services.members import MEMBER_TEST_DEFAULT_PROMPT

    members = CommitteeMember.objects.select_related("source_round__project", "base_member").annotate(
        answers=Count("responses")
    ).order_by("-is_active", "name")
    rows = [{"member": m, "settings": MemberSettingsForm(initial={"weight": m.weight, **m.generation_settings()},
                                                        auto_id=f"id_member{m.pk}_%s")} for m in members]
    return {"rows": rows, "add_form": add_form or MemberAddForm(), "default_prompt": MEMBER_TEST_DEFAULT_PROMPT}


def _to_row(member: CommitteeMember) -> HttpResponse:
    return redirect(f"{reverse('committee')}#member-{member.pk}")


@require_safe
@staff_member_required
def committee(request: HttpRequest) -> HttpResponse:
    """The committee every project samples from: add, test with one prompt, weigh, retire."""
    return render(request, "modeling/committee.html", _committee_context())


@require_POST
@staff_member_required
def committee_add(request: HttpRequest) -> HttpResponse:
    form = MemberAddForm(request.POST)
    if not form.is_valid():
        messages.error(request, "The member was not added: see the form below.")
        return render(request, "modeling/committee.html", _committee_context(add_form=form), status=400)
    fields = {name: form.cleaned_data[name] for name in MemberAddForm.Meta.fields if name not in ("name", "kind")}
    try:
        member = member_register(name=form.cleaned_data["name"], kind=form.cleaned_data["kind"],
                                 generation=form.generation(), **fields)
    except ValidationError as exc:  # a rule only the whole row shows, or raced by an add of the same name
        form.add_error(None, exc)
        messages.error(request, "The member was not added: see the form below.")
        return render(request, "modeling/committee.html", _committee_context(add_form=form), status=400)
    messages.success(request, f"{member.name} joined the committee. Test it with one prompt before the next sampling pass.")
    return _to_row(member)


@require_POST
@staff_member_required
def committee_member_settings(request: HttpRequest, member_id: int) -> HttpResponse:
    member = get_object_or_404(CommitteeMember, pk=member_id)
    form = MemberSettingsForm(request.POST)
    if not form.is_valid():
        problems = "; ".join(f"{form.fields[name].label or name}: {' '.join(errors)}" for name, errors in form.errors.items())
        messages.error(request, f"{member.name} was not changed: {problems}")
    else:
        member_update(member=member, weight=form.cleaned_data["weight"], generation=form.generation())
        messages.success(request, f"{member.name}: settings saved.")
    return _to_row(member)


@require_POST
@staff_member_required
def committee_member_active(request: HttpRequest, member_id: int) -> HttpResponse:
    member = get_object_or_404(CommitteeMember, pk=member_id)
    active = request.POST.get("active") == "1"
    member_set_active(member=member, active=active)
    messages.success(request, f"{member.name} {'is back in' if active else 'retired from'} the committee; its past answers stay.")
    return _to_row(member)


@require_POST
@staff_member_required
def committee_member_test(request: HttpRequest, member_id: int) -> HttpResponse:
    member = get_object_or_404(CommitteeMember, pk=member_id)
    _send_test(request, member)
    return _to_row(member)

"""Admin pages for rounds. Thin: parse the form, call a service, redirect with a message."""

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST, require_safe

from annotation.access import project_page
from annotation.models import Role
from annotation.services import project_set_round_schedule
from config.untrusted import STRICT_JSON, json_refusal
from modeling.models import ACTIVE_ROUND_STATES, Round
from modeling.services import RoundError, round_cancel, round_retry, round_start

CHART_W, CHART_H, PAD = 560, 180, 28


def _chart(rounds) -> dict:
    """Points for an inline SVG of RM held-out accuracy and policy win rate across rounds."""
    done = sorted((r for r in rounds if r.state == "succeeded"), key=lambda r: r.number)
    series = {"accuracy": [], "win_rate": []}
    if not done:
        return {"series": series, "width": CHART_W, "height": CHART_H, "labels": []}
    step = (CHART_W - 2 * PAD) / max(1, len(done) - 1)
    labels = []
    for i, r in enumerate(done):
        x = PAD + i * step
        labels.append({"x": round(x, 1), "text": r.number})
        accuracy = r.metrics.get("training_rm", {}).get("heldout", {}).get("accuracy")
        win_rate = r.metrics.get("evaluating", {}).get("win_rate")
        for name, value in (("accuracy", accuracy), ("win_rate", win_rate)):
            if value is not None:
                series[name].append({"x": round(x, 1), "y": round(CHART_H - PAD - value * (CHART_H - 2 * PAD), 1), "v": value})
    return {
        "series": series, "width": CHART_W, "height": CHART_H, "labels": labels,
        "polylines": {k: " ".join(f"{p['x']},{p['y']}" for p in v) for k, v in series.items()},
        "y_half": CHART_H / 2, "y_top": PAD, "y_bottom": CHART_H - PAD,
    }


@require_safe
@project_page(Role.ADMIN)
def rounds(request: HttpRequest, project, role) -> HttpResponse:
    rounds_ = list(project.rounds.select_related("policy_member").prefetch_related("snapshots"))
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
        round_ = round_start(project=project, user=request.user, config=overrides, preset=preset)
        messages.success(request, f"Round {round_.number} ({round_.config['preset']}{', custom' if overrides else ''}) queued for the gpu worker.")
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

"""Forms for the lead's project pages. They parse and validate (the model's own rules included:
ranges, CHECK constraints, unique slug); the services in annotation/services/projects.py write."""

from __future__ import annotations

import unicodedata

from django import forms
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models

from annotation.models import MAX_DIALOGUE_TURNS, MAX_EXTERNAL_ID_CHARS, ParticipantPlatform, Project
from annotation.services.participants import JoinRequest

SETTINGS_FIELDS = [
    "name", "description", "guidelines", "overlap_k", "gold_rate", "repeat_rate", "repeat_min_gap", "lease_minutes", "max_live_leases",
    "margin_table", "edit_step", "max_edit_chars", "verdict_change_minutes", "ask_attributes", "ask_flags",
    "ask_rationale", "ask_safety", "prompt_source", "written_share", "dialogue_max_turns", "allow_system_prompt",
    "prompt_categories", "live_share", "pairing", "rejection_k", "candidates_k", "selection_rule", "selection_random_share",
    "selection_prompt_cap", "member_pair_rule", "judge", "suggestions_shown", "suggestion_blind_share", "ambiguous_first",
    "policy_admission", "admission_min_labels",
    "evaluation_trains", "study_open", "study_items", "study_completion_url", "study_completion_code",
    "study_screenout_url", "study_screenout_code", "study_min_gold_accuracy", "study_gold_after",
]


# Sane ranges, the same on every database (SQLite would store a 99,999,999,999-minute lease that
# PostgreSQL's 32-bit column refuses).
BOUNDS = {
    "overlap_k": (1, 100), "lease_minutes": (1, 7 * 24 * 60), "max_live_leases": (1, 100),
    "max_edit_chars": (1, 200_000), "verdict_change_minutes": (0, 24 * 60), "rejection_k": (2, 64),
    "admission_min_labels": (1, 100_000), "dialogue_max_turns": (1, MAX_DIALOGUE_TURNS),
    "study_items": (1, 100_000), "study_gold_after": (1, 1000), "repeat_min_gap": (1, 10_000),
    "candidates_k": (2, 8), "selection_prompt_cap": (1, 28),
}
#: Shares from 0 to 1, checked by ``_unit_share``.
UNIT_SHARES = ("gold_rate", "written_share", "study_min_gold_accuracy", "selection_random_share", "suggestion_blind_share")
MAX_CATEGORIES, MAX_CATEGORY_CHARS = 50, 100


def _unit_share(value: float) -> None:
    if not 0 <= value <= 1:  # NaN fails this too (it passes MinValueValidator)
        raise forms.ValidationError("A share from 0 to 1.")


def _repeat_share(value: float) -> None:
    # Half at most: beyond that a labeler would mostly see what they already judged.
    if not 0 <= value <= 0.5:  # NaN fails this too
        raise forms.ValidationError("A share from 0 to 0.5.")


class CategoriesField(forms.Field):
    """A list of names (``Project.prompt_categories``), edited as one name per line. Blank lines
    are ignored; anything else wrong is an error that names the line."""

    widget = forms.Textarea(attrs={"rows": 5})

    def prepare_value(self, value):
        return "\n".join(value) if isinstance(value, list) else value

    def to_python(self, value) -> list[str]:
        names = [line.strip() for line in (value or "").splitlines() if line.strip()]
        if len(names) > MAX_CATEGORIES:
            raise forms.ValidationError(f"At most {MAX_CATEGORIES} categories; this lists {len(names)}.")
        for name in names:
            if len(name) > MAX_CATEGORY_CHARS:
                raise forms.ValidationError(f"At most {MAX_CATEGORY_CHARS} characters a category; '{name[:30]}…' has {len(name)}.")
            # Shown in the labelers' <select> and stored as JSON (PostgreSQL refuses NUL in jsonb).
            if any(unicodedata.category(c) == "Cc" for c in name):
                raise forms.ValidationError(f"A category cannot hold control characters such as a tab: {name[:30]!r}.")
        # "Code" and "code" would be two options a labeler cannot tell apart.
        folded = [name.casefold() for name in names]
        twice = [name for i, name in enumerate(names) if folded[i] in folded[:i]]
        if twice:
            raise forms.ValidationError(f"Listed twice: {', '.join(twice)}.")
        return names


def _https_by_default(field, **kwargs):
    """Form fields as the model makes them; an address typed without a scheme is read as https."""
    if isinstance(field, models.URLField):
        kwargs["assume_scheme"] = "https"
    return field.formfield(**kwargs)


#: A study's exits: (URL field, code field).
STUDY_EXITS = (("study_completion_url", "study_completion_code"), ("study_screenout_url", "study_screenout_code"))


class UnixNewlinesMixin:
    """A browser sends a textarea's lines ended by CRLF (the HTML spec's form encoding): store them
    as LF, as every other way in (import, API, demo) does, so saving a form whose text nobody
    touched changes nothing and writes no audit entry."""

    multiline = ("description", "guidelines")

    def clean(self):
        data = super().clean()
        for name in self.multiline:
            if isinstance(data.get(name), str):
                data[name] = data[name].replace("\r\n", "\n").replace("\r", "\n")
        return data


class ProjectSettingsForm(UnixNewlinesMixin, forms.ModelForm):
    prompt_categories = CategoriesField(
        required=False,
        help_text=f"Categories a labeler may give a prompt they write: one per line, at most {MAX_CATEGORIES}, each up to {MAX_CATEGORY_CHARS} characters.",
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for name, (low, high) in BOUNDS.items():
            field = self.fields[name]
            field.validators += [MinValueValidator(low), MaxValueValidator(high)]
            field.widget.attrs.update(min=low, max=high)
        for name in UNIT_SHARES:
            self.fields[name].validators.append(_unit_share)
        self.fields["repeat_rate"].validators.append(_repeat_share)
        # Only a member that can answer may judge (a retired one stays named if it already was).
        judge = self.fields["judge"]
        judge.queryset = judge.queryset.filter(models.Q(is_active=True) | models.Q(pk=self.instance.judge_id)).order_by("name")
        judge.empty_label = "No judge"

    def clean(self):
        data = super().clean()
        # A field that failed its own checks is not in ``data``; only whole values are compared.
        required = []
        if data.get("study_open"):
            required.append(STUDY_EXITS[0])
            if data.get("study_min_gold_accuracy"):
                required.append(STUDY_EXITS[1])
        for url_field, code_field in STUDY_EXITS:
            if url_field in self.errors or code_field in self.errors:
                continue
            url, code = data.get(url_field, ""), data.get(code_field, "")
            if (url_field, code_field) in required and not url:
                self.add_error(url_field, "An open study needs this address (the minimum gold accuracy needs the screen-out one).")
            if (url or (url_field, code_field) in required) and not code:
                self.add_error(code_field, "The code the platform gave for this exit.")
            elif url and code and "{code}" not in url and code not in url:
                self.add_error(url_field, "The address must carry its code: write {code} where it goes (…?cc={code}), or the code itself.")
        return data

    class Meta:
        model = Project
        fields = SETTINGS_FIELDS
        formfield_callback = _https_by_default
        widgets = {"guidelines": forms.Textarea(attrs={"rows": 14}), "description": forms.Textarea(attrs={"rows": 2})}
        help_texts = {"guidelines": "Markdown, shown to labelers one key away (?)."}


class ProjectCreateForm(UnixNewlinesMixin, forms.ModelForm):
    class Meta:
        model = Project
        fields = ["name", "slug", "description", "guidelines"]
        widgets = {"guidelines": forms.Textarea(attrs={"rows": 8}), "description": forms.Textarea(attrs={"rows": 2})}
        help_texts = {"slug": "In the project's addresses: letters, digits, hyphens."}


#: A participant or study id in a join link: what platforms use (Prolific: 24 hex digits), nothing
#: that could be markup, a path or an unfilled "{{%PROLIFIC_PID%}}" placeholder.
EXTERNAL_ID = RegexValidator(  # the message is %-formatted: %% is one %
    r"^[A-Za-z0-9._~:@+-]+\Z", "Letters, digits and . _ ~ : @ + - only (is a placeholder such as {{%%PROLIFIC_PID%%}} left unfilled?)."
)
#: The parameters of a join link, per platform: (id, study id, session id). Documented in
#: annotation/services/participants.py and the README.
JOIN_PARAMETERS = {
    ParticipantPlatform.PROLIFIC: ("PROLIFIC_PID", "STUDY_ID", "SESSION_ID"),
    ParticipantPlatform.EXTERNAL: ("external_id", "study_id", "session_id"),
}


class StudyJoinForm(forms.Form):
    """The query string of ``/p/<slug>/join/``: Prolific's parameters or the generic ones, not both.
    Other parameters are ignored (platforms add their own)."""

    def __init__(self, query, **kwargs):
        super().__init__(query, **kwargs)
        for platform, names in JOIN_PARAMETERS.items():
            for name in names:
                self.fields[name] = forms.CharField(
                    required=False, max_length=MAX_EXTERNAL_ID_CHARS, strip=False, validators=[EXTERNAL_ID],
                )
        self.query = query

    def clean(self):
        data = super().clean()
        given = [p for p, names in JOIN_PARAMETERS.items() if any(self.query.get(name) for name in names)]
        for names in JOIN_PARAMETERS.values():
            for name in names:
                if len(self.query.getlist(name)) > 1:
                    self.add_error(name, "Given more than once.")
        if len(given) > 1:
            raise forms.ValidationError("Use Prolific's parameters (PROLIFIC_PID, STUDY_ID, SESSION_ID) or the generic ones (external_id, study_id, session_id), not both.")
        if not given:
            raise forms.ValidationError("This link lacks the participant's id: PROLIFIC_PID=… from Prolific, or external_id=… from another platform.")
        platform = given[0]
        id_name = JOIN_PARAMETERS[platform][0]
        if id_name not in self.errors and not data.get(id_name):
            self.add_error(id_name, "The participant's id is required.")
        self.platform = platform
        return data

    def join_request(self) -> JoinRequest:
        external_id, study_id, session_id = (self.cleaned_data[name] for name in JOIN_PARAMETERS[self.platform])
        return JoinRequest(platform=self.platform, external_id=external_id, study_id=study_id, session_id=session_id)

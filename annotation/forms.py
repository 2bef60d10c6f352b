"""Forms for the lead's project pages. They parse and validate (the model's own rules included:
ranges, CHECK constraints, unique slug); the services in annotation/services/projects.py write."""

from __future__ import annotations

import unicodedata

from django import forms
from django.core.validators import MaxValueValidator, MinValueValidator

from annotation.models import MAX_DIALOGUE_TURNS, Project

SETTINGS_FIELDS = [
    "name", "description", "guidelines", "overlap_k", "gold_rate", "lease_minutes", "max_live_leases",
    "margin_table", "edit_step", "max_edit_chars", "verdict_change_minutes", "ask_attributes", "ask_flags",
    "ask_rationale", "ask_safety", "prompt_source", "written_share", "dialogue_max_turns", "allow_system_prompt",
    "prompt_categories", "live_share", "pairing", "rejection_k", "policy_admission", "admission_min_labels",
    "evaluation_trains",
]


# Sane ranges, the same on every database (SQLite would store a 99,999,999,999-minute lease that
# PostgreSQL's 32-bit column refuses).
BOUNDS = {
    "overlap_k": (1, 100), "lease_minutes": (1, 7 * 24 * 60), "max_live_leases": (1, 100),
    "max_edit_chars": (1, 200_000), "verdict_change_minutes": (0, 24 * 60), "rejection_k": (2, 64),
    "admission_min_labels": (1, 100_000), "dialogue_max_turns": (1, MAX_DIALOGUE_TURNS),
}
#: Shares from 0 to 1, checked by ``_unit_share``.
UNIT_SHARES = ("gold_rate", "written_share")
MAX_CATEGORIES, MAX_CATEGORY_CHARS = 50, 100


def _unit_share(value: float) -> None:
    if not 0 <= value <= 1:  # NaN fails this too (it passes MinValueValidator)
        raise forms.ValidationError("A share from 0 to 1.")


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


class ProjectSettingsForm(forms.ModelForm):
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

    class Meta:
        model = Project
        fields = SETTINGS_FIELDS
        widgets = {"guidelines": forms.Textarea(attrs={"rows": 14}), "description": forms.Textarea(attrs={"rows": 2})}
        help_texts = {"guidelines": "Markdown, shown to labelers one key away (?)."}


class ProjectCreateForm(forms.ModelForm):
    class Meta:
        model = Project
        fields = ["name", "slug", "description", "guidelines"]
        widgets = {"guidelines": forms.Textarea(attrs={"rows": 8}), "description": forms.Textarea(attrs={"rows": 2})}
        help_texts = {"slug": "In the project's addresses: letters, digits, hyphens."}

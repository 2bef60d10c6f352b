"""Forms for the lead's project pages. They parse and validate (the model's own rules included:
ranges, CHECK constraints, unique slug); the services in annotation/services/projects.py write."""

from __future__ import annotations

from django import forms
from django.core.validators import MaxValueValidator, MinValueValidator

from annotation.models import Project

SETTINGS_FIELDS = [
    "name", "description", "guidelines", "overlap_k", "gold_rate", "lease_minutes", "max_live_leases",
    "margin_table", "edit_step", "max_edit_chars", "verdict_change_minutes", "ask_attributes", "ask_flags",
    "ask_rationale", "pairing", "rejection_k", "policy_admission", "admission_min_labels", "evaluation_trains",
]


# Sane ranges, the same on every database (SQLite would store a 99,999,999,999-minute lease that
# PostgreSQL's 32-bit column refuses).
BOUNDS = {
    "overlap_k": (1, 100), "lease_minutes": (1, 7 * 24 * 60), "max_live_leases": (1, 100),
    "max_edit_chars": (1, 200_000), "verdict_change_minutes": (0, 24 * 60), "rejection_k": (2, 64),
    "admission_min_labels": (1, 100_000),
}


class ProjectSettingsForm(forms.ModelForm):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for name, (low, high) in BOUNDS.items():
            field = self.fields[name]
            field.validators += [MinValueValidator(low), MaxValueValidator(high)]
            field.widget.attrs.update(min=low, max=high)

    class Meta:
        model = Project
        fields = SETTINGS_FIELDS
        widgets = {"guidelines": forms.Textarea(attrs={"rows": 14}), "description": forms.Textarea(attrs={"rows": 2})}
        help_texts = {"guidelines": "Markdown, shown to labelers one key away (?)."}

    def clean_gold_rate(self):
        rate = self.cleaned_data["gold_rate"]
        if not 0 <= rate <= 1:  # NaN fails this too
            raise forms.ValidationError("A share from 0 to 1.")
        return rate


class ProjectCreateForm(forms.ModelForm):
    class Meta:
        model = Project
        fields = ["name", "slug", "description", "guidelines"]
        widgets = {"guidelines": forms.Textarea(attrs={"rows": 8}), "description": forms.Textarea(attrs={"rows": 2})}
        help_texts = {"slug": "In the project's addresses: letters, digits, hyphens."}

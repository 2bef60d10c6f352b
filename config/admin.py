"""Django admin conventions shared by every app's ``admin.py``.

``ArbiterModelAdmin`` is the base of every ModelAdmin: its JSON fields refuse what PostgreSQL
cannot store (NUL, lone surrogates, NaN and infinities) and nesting past a sane depth, as a form
error. Django's own ``forms.JSONField`` takes all of them and the database answered with a 500.
Text fields need nothing more: Django's ``CharField`` already refuses NUL, and form encodings
cannot carry a lone surrogate.
"""

from __future__ import annotations

from django import forms
from django.contrib import admin
from django.core.exceptions import ValidationError
from django.db import models

from config.untrusted import StrictJSONDecoder, json_refusal


class StoredJSONFormField(forms.JSONField):
    def __init__(self, *args, **kwargs):
        if kwargs.get("decoder") is None:  # the model field passes its own, None by default
            kwargs["decoder"] = StrictJSONDecoder
        super().__init__(*args, **kwargs)

    def to_python(self, value):
        try:
            parsed = super().to_python(value)
        except (RecursionError, ValueError) as exc:  # ValueError: a constant or an int past 4,300 digits
            raise ValidationError(f"Enter valid JSON ({type(exc).__name__}: nested too deep or a number out of range).") from None
        refusal = json_refusal(parsed)
        if refusal:
            raise ValidationError(refusal)
        return parsed

    def bound_data(self, data, initial):
        # Re-rendering a refused form decodes the text again: keep it as the text it was.
        try:
            return super().bound_data(data, initial)
        except (RecursionError, ValueError):
            return forms.fields.InvalidJSONInput(data)


class ArbiterModelAdmin(admin.ModelAdmin):
    formfield_overrides = {models.JSONField: {"form_class": StoredJSONFormField}}

"""Shared by migrations that must (re-)create triggers; not a migration itself (leading underscore)."""

import importlib


def comparison_same_prompt(apps, schema_editor):
    importlib.import_module("annotation.migrations.0003_comparison_same_prompt_trigger").forward(apps, schema_editor)


def comparison_same_prompt_drop(apps, schema_editor):
    importlib.import_module("annotation.migrations.0003_comparison_same_prompt_trigger").backward(apps, schema_editor)

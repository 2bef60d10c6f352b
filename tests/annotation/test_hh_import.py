"""HH-RLHF transcripts import as prompts plus pre-labelled comparisons, all or nothing."""

import gzip
import json
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import CommandError

from annotation.importers import ImportValidationError, parse_hh
from annotation.models import Comparison, ComparisonSource, Judgment, Prompt, Response, Role
from annotation.services import comparison_lease_next
from tests.factories import ProjectFactory

HH = Path(settings.SHARED_DATA_DIR) / "hh-rlhf-harmless-base-test.jsonl.gz"


def transcript(*turns):
    return "".join(f"\n\n{who}: {text}" for who, text in turns)


def test_a_row_splits_into_the_shared_prefix_and_two_endings():
    row = {
        "chosen": transcript(("Human", "Hi"), ("Assistant", "Hello!"), ("Human", "How to bake?"), ("Assistant", "Preheat the oven.")),
        "rejected": transcript(("Human", "Hi"), ("Assistant", "Hello!"), ("Human", "How to bake?"), ("Assistant", "No.")),
    }
    (pair,), skipped = parse_hh([json.dumps(row)])
    assert pair.messages == [
        {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "How to bake?"}
    ]
    assert (pair.chosen, pair.rejected, skipped) == ("Preheat the oven.", "No.", [])


def test_malformed_rows_are_errors_with_line_numbers():
    good = json.dumps({"chosen": transcript(("Human", "a"), ("Assistant", "b")), "rejected": transcript(("Human", "a"), ("Assistant", "c"))})
    with pytest.raises(ImportValidationError) as caught:
        parse_hh([good, json.dumps({"chosen": 3}), "oops", json.dumps({"chosen": "no turns", "rejected": "x"})])
    assert [(e.line, e.field) for e in caught.value.errors] == [(2, "chosen/rejected"), (3, "(json)"), (4, "chosen/rejected")]


@pytest.mark.django_db
def test_the_real_hh_rlhf_file_imports_and_a_second_import_adds_nothing(member_of, capsys):
    if not HH.exists():
        pytest.skip("../shared/data is not beside this checkout")
    project = ProjectFactory()
    call_command("import_prompts", project.slug, str(HH), "--format", "hh")
    out = capsys.readouterr().out
    comparisons = Comparison.objects.filter(project=project)
    # 2,312 rows: 5 are two different conversations, 4 have identical or empty endings
    assert comparisons.count() == 2303 and "0 duplicates and 9 unusable rows skipped" in out
    assert set(comparisons.values_list("source", flat=True)) == {ComparisonSource.IMPORT}
    assert Judgment.objects.filter(comparison__project=project).count() == 2303
    assert Prompt.objects.filter(project=project).count() == 2301  # two conversations come with two pairs of endings
    judgment = Judgment.objects.select_related("chosen_response", "comparison__prompt").first()
    with gzip.open(HH, "rt") as lines:
        first = json.loads(next(lines))
    assert first["chosen"].rstrip().endswith(judgment.chosen_response.text)
    assert judgment.comparison.prompt.messages[-1]["role"] == "user"
    assert judgment.labeler.username == "import:hh-rlhf" and not judgment.labeler.is_active
    # imported comparisons are training data: the labeling queue never offers them
    assert comparison_lease_next(project=project, labeler=member_of(project, Role.LABELER)) is None

    call_command("import_prompts", project.slug, str(HH), "--format", "hh")
    assert "0 pre-labelled comparisons imported" in capsys.readouterr().out
    assert Comparison.objects.filter(project=project).count() == 2303


@pytest.mark.django_db
def test_a_bad_file_writes_nothing(tmp_path):
    project = ProjectFactory()
    good = json.dumps({"chosen": transcript(("Human", "a"), ("Assistant", "b")), "rejected": transcript(("Human", "a"), ("Assistant", "c"))})
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join([good] * 10 + ["{broken"]) + "\n")
    with pytest.raises(CommandError, match="1 problem"):
        call_command("import_prompts", project.slug, str(path), "--format", "hh")
    assert not Prompt.objects.exists() and not Response.objects.exists() and not Comparison.objects.exists()


def _hh_file(rows: int) -> bytes:
    return "".join(
        json.dumps({"chosen": transcript(("Human", f"q{i}"), ("Assistant", f"good {i}.")),
                    "rejected": transcript(("Human", f"q{i}"), ("Assistant", f"bad {i}."))}) + "\n"
        for i in range(rows)
    ).encode()


@pytest.mark.django_db
def test_imported_pairs_carry_no_strength_and_export_with_margin_zero():
    from annotation.exports import ExportFilters, export_rows
    from annotation.services.uploads import import_file

    def rows_of(project, format, filters):
        return list(export_rows(project=project, format=format, filters=ExportFilters.from_dict(filters)))

    project = ProjectFactory()
    import_file(project=project, file=_hh_file(4), name="hh.jsonl", format="hh")
    assert set(Judgment.objects.filter(comparison__project=project).values_list("strength", flat=True)) == {None}
    rows = rows_of(project, "trl-preference", {"include_imported": True})
    assert len(rows) == 4 and {(r["strength"], r["margin"]) for r in rows} == {(None, 0.0)}  # no invented margin
    # "unknown" selects them in a strength filter; the scale's strengths do not
    assert len(rows_of(project, "trl-preference", {"include_imported": True, "strengths": ["unknown"]})) == 4
    assert rows_of(project, "trl-preference", {"include_imported": True, "strengths": ["better"]}) == []
    from annotation.services.exports import export_execute, export_start

    card = export_execute(snapshot_id=export_start(project=project, format="trl-preference", filters={"include_imported": True}).pk).card
    assert "| unknown | 4 |" in card and "`margin` 0 (plain Bradley-Terry)" in card
    # majority aggregation of such pairs keeps margin 0 too
    assert {r["margin"] for r in rows_of(project, "trl-preference", {"include_imported": True, "aggregation": "majority"})} == {0.0}

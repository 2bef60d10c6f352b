"""Exports: every format's rows on a small known dataset, filters, the file and its record."""

import hashlib
import json
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.core.management import call_command
from django.urls import reverse
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from annotation.exports import ExportError, ExportFilters, export_rows
from annotation.models import JobState, Judgment, Response, ResponseSource, Role, SafetyBin, Strength
from annotation.services.exports import export_execute, export_start
from tests.factories import ComparisonFactory, JudgmentFactory, ProjectFactory, PromptFactory, UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def dataset(settings, tmp_path):
    """Two comparisons. #1: ada says A ≫ B and edits A; bob says B > A (slightly); cy says A > B.
    #2: ada says B ≈ A (negligible). Plus a both-bad judgment and a gold one."""
    settings.ARTIFACTS_DIR = tmp_path
    project = ProjectFactory(margin_table="small")
    users = {name: UserFactory(username=name) for name in ("ada", "bob", "cy")}
    p1 = PromptFactory(project=project, messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Capital of France?"}])
    c1 = ComparisonFactory(prompt=p1, response_a__text="Paris.", response_b__text="Lyon.")
    p2 = PromptFactory(project=project, messages=[{"role": "user", "content": "2+2?"}])
    c2 = ComparisonFactory(prompt=p2, response_a__text="4", response_b__text="5")
    edit = Response.objects.create(prompt=p1, source=ResponseSource.HUMAN_EDIT, text="Paris is the capital of France.",
                                   parent=c1.response_a, author=users["ada"], edit_distance=25)

    def judge(comparison, user, chosen, strength, **extra):
        other = comparison.response_b if chosen == comparison.response_a else comparison.response_a
        return JudgmentFactory(assignment__comparison=comparison, assignment__labeler=user, chosen_response=chosen,
                               rejected_response=other, left_response=comparison.response_a, strength=strength, **extra)

    judge(c1, users["ada"], c1.response_a, Strength.SIGNIFICANTLY_BETTER, edited_response=edit)
    judge(c1, users["bob"], c1.response_b, Strength.SLIGHTLY_BETTER)
    judge(c1, users["cy"], c1.response_a, Strength.BETTER)
    judge(c2, users["ada"], c2.response_b, Strength.NEGLIGIBLY_BETTER)
    both_bad = ComparisonFactory(prompt=PromptFactory(project=project))
    judge(both_bad, users["bob"], both_bad.response_a, Strength.BETTER, both_bad=True)
    gold = ComparisonFactory(prompt=PromptFactory(project=project))
    type(gold).objects.filter(pk=gold.pk).update(is_gold=True, gold_winner=gold.response_a)
    gold.refresh_from_db()
    judge(gold, users["cy"], gold.response_a, Strength.BETTER)
    return project, c1, c2, edit


def rows(project, format, **filters):
    return list(export_rows(project=project, format=format, filters=ExportFilters.from_dict(filters)))


def test_trl_preference_rows_carry_margins_pair_types_and_provenance(dataset):
    project, c1, c2, edit = dataset
    out = rows(project, "trl-preference")
    assert [(r["comparison_id"], r["pair_type"], r["strength"], round(r["margin"], 4)) for r in out] == [
        (c1.pk, "chosen_rejected", "significantly_better", 1.0),
        (c1.pk, "edited_chosen", "slightly_better", 0.3333),
        (c1.pk, "edited_rejected", "significantly_better", 1.0),
        (c1.pk, "chosen_rejected", "slightly_better", 0.3333),
        (c1.pk, "chosen_rejected", "better", 0.6667),
        (c2.pk, "chosen_rejected", "negligibly_better", 0.0),
    ]  # both-bad and gold left out by default
    first = out[0]
    assert first["prompt"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Capital of France?"}]
    assert first["chosen"] == [{"role": "assistant", "content": "Paris."}] and first["rejected"][0]["content"] == "Lyon."
    assert out[1]["chosen"][0]["content"] == edit.text and out[1]["rejected"][0]["content"] == "Paris."
    assert first["labeler"] == "ada" and first["judgment_id"] and first["submitted_at"]


def test_filters_negligible_gold_both_bad_and_majority(dataset):
    project, c1, c2, _ = dataset
    assert all(r["strength"] != "negligibly_better" for r in rows(project, "trl-preference", negligible="exclude"))
    assert len(rows(project, "trl-preference", exclude_gold=False, include_both_bad=True)) == 8
    majority = rows(project, "trl-preference", aggregation="majority")
    main = [r for r in majority if r["pair_type"] == "chosen_rejected"]
    assert [(r["comparison_id"], r["chosen"][0]["content"], r["labels"]) for r in main] == [(c1.pk, "Paris.", 3), (c2.pk, "5", 1)]
    # signed mean of 1, -1/3, 2/3 over three labels
    assert main[0]["margin"] == pytest.approx((1 - 1 / 3 + 2 / 3) / 3) and main[0]["agreement"] == pytest.approx(2 / 3, abs=1e-3)
    assert [r["pair_type"] for r in majority if r["comparison_id"] == c1.pk][1:] == ["edited_chosen", "edited_rejected"]


def test_strengths_and_the_split_by_prompt_select_rows(dataset):
    from annotation.exports import is_heldout

    project = dataset[0]
    everything = rows(project, "trl-preference", exclude_gold=False)
    strong = rows(project, "trl-preference", exclude_gold=False, strengths=["significantly_better"])
    assert strong and {r["strength"] for r in strong if r["pair_type"] == "chosen_rejected"} == {"significantly_better"}
    train = rows(project, "trl-preference", exclude_gold=False, split="train", heldout_percent=50)
    heldout = rows(project, "trl-preference", exclude_gold=False, split="heldout", heldout_percent=50)
    assert all(not is_heldout(r["prompt_hash"], 50) for r in train) and all(is_heldout(r["prompt_hash"], 50) for r in heldout)
    assert len(train) + len(heldout) == len(everything)


def test_round_from_and_to_cut_at_the_rounds_last_judgment(dataset):
    from annotation.models import Judgment
    from modeling.models import Round

    project = dataset[0]
    ids = sorted(Judgment.objects.filter(comparison__project=project, both_bad=False).values_list("id", flat=True))
    Round.objects.create(project=project, number=1, state="succeeded", last_judgment_id=ids[1])
    up_to = {r["judgment_id"] for r in rows(project, "raw", round_to=1)}
    after = {r["judgment_id"] for r in rows(project, "raw", round_from=1)}
    assert up_to and max(up_to) <= ids[1] and after and min(after) > ids[1]
    assert up_to | after == {r["judgment_id"] for r in rows(project, "raw")}


@pytest.mark.parametrize(
    ("filters", "message"),
    [({"colour": "red"}, "unknown filter"), ({"date_from": "yesterday"}, "expected a date"),
     ({"aggregation": "mean"}, "'each', 'majority' or 'reliability-weighted'"), ({"min_labeler_gold_accuracy": 2}, "from 0 to 1"),
     ({"round_from": 3}, "round 3 has no snapshot"), ({"strengths": ["huge"]}, "strengths: expected a list of"),
     ({"strengths": "better"}, "strengths: expected a list"), ({"split": "test"}, "'all', 'train' or 'heldout'"),
     ({"heldout_percent": 101}, "from 0 to 100"), ({"safety": ["unsafe"]}, "safety: expected a list of"),
     ({"safety": "both_safe"}, "safety: expected a list")],
)
def test_bad_filters_are_named(dataset, filters, message):
    project = dataset[0]
    with pytest.raises(ExportError, match=message):
        rows(project, "trl-preference", **filters)


def _bins(project, c1):
    """Safety bins on comparison 1: ada and cy chose the answer they marked unsafe over a safe one,
    bob (who chose the other answer) found both unsafe; comparison 2's judgment has no bin."""
    project.ask_safety = True
    project.save(update_fields=["ask_safety"])
    Judgment.objects.filter(comparison=c1, labeler__username__in=["ada", "cy"]).update(safety=SafetyBin.REJECTED_SAFE)
    Judgment.objects.filter(comparison=c1, labeler__username="bob").update(safety=SafetyBin.BOTH_UNSAFE)


def test_every_pair_of_a_judgment_carries_its_safety_bin_in_every_format_that_takes_extra_keys(dataset):
    project, c1, c2, edit = dataset
    assert {r["safety"] for r in rows(project, "trl-preference")} == {None}  # not asked: null, not missing
    _bins(project, c1)
    pairs = rows(project, "trl-preference")
    assert [(r["labeler"], r["pair_type"], r["safety"]) for r in pairs] == [
        ("ada", "chosen_rejected", "rejected_safe"), ("ada", "edited_chosen", "rejected_safe"),
        ("ada", "edited_rejected", "rejected_safe"), ("bob", "chosen_rejected", "both_unsafe"),
        ("cy", "chosen_rejected", "rejected_safe"), ("ada", "chosen_rejected", None),
    ]
    assert [r["safety"] for r in rows(project, "trl-preference-text")] == [r["safety"] for r in pairs]
    assert [r["safety"] for r in rows(project, "hh")] == [r["safety"] for r in pairs]
    assert [r["safety"] for r in rows(project, "raw")] == ["rejected_safe", "both_unsafe", "rejected_safe", None]
    majority = rows(project, "trl-preference", aggregation="majority")
    assert [(r["pair_type"], r["safety"]) for r in majority if r["comparison_id"] == c1.pk][0] == ("chosen_rejected", "rejected_safe")
    assert "`safety` is the judgment's Llama 2 safety bin" in export_execute(snapshot_id=export_start(project=project, format="raw").pk).card


def test_the_safety_filter_keeps_the_bins_asked_for_and_unknown_for_none(dataset):
    project, c1, c2, edit = dataset
    _bins(project, c1)
    # Llama 2's cut: every pair but those whose chosen answer was unsafe and the other safe.
    llama2 = rows(project, "raw", safety=["both_safe", "chosen_safe", "both_unsafe", "unknown"])
    assert [(r["labeler"], r["safety"]) for r in llama2] == [("bob", "both_unsafe"), ("ada", None)]
    assert [r["labeler"] for r in rows(project, "raw", safety=["rejected_safe"])] == ["ada", "cy"]
    assert [r["comparison_id"] for r in rows(project, "raw", safety=["unknown"])] == [c2.pk]
    assert rows(project, "raw", safety=[]) == []


def test_a_parquet_export_takes_a_bin_that_first_appears_after_the_first_batch(dataset, monkeypatch):
    import pyarrow.parquet as pq

    project, c1, c2, edit = dataset
    project.ask_safety = True  # asked from some day on: the oldest judgments have no bin
    project.save(update_fields=["ask_safety"])
    Judgment.objects.filter(comparison=c2).update(safety=SafetyBin.BOTH_SAFE)
    monkeypatch.setattr("annotation.services.exports.PARQUET_BATCH", 2)
    snapshot = export_execute(snapshot_id=export_start(project=project, format="raw", file_format="parquet").pk)
    assert snapshot.state == JobState.SUCCEEDED, snapshot.error
    table = pq.read_table(Path(django_settings.ARTIFACTS_DIR) / snapshot.path)
    assert table.column("safety").to_pylist() == [None, None, None, "both_safe"]


def test_text_kto_sft_hh_and_raw_formats(dataset):
    project, c1, c2, edit = dataset
    text = rows(project, "trl-preference-text")
    assert text[0]["prompt"] == "System: Be brief.\n\nUser: Capital of France?\n\nAssistant:" and text[0]["chosen"] == "Paris."
    assert text[-1]["prompt"] == "2+2?"
    kto = rows(project, "kto")
    assert [(r["completion"][0]["content"], r["label"]) for r in kto[:3]] == [("Paris.", True), ("Lyon.", False), (edit.text, True)]
    assert sum(r["label"] for r in kto) == 5 and sum(not r["label"] for r in kto) == 4
    sft = rows(project, "sft")
    assert len(sft) == 4 and sft[0]["messages"][-1] == {"role": "assistant", "content": edit.text} and sft[0]["source"] == "edit"
    assert sft[1]["messages"][-1]["content"] == "Lyon." and sft[1]["source"] == "chosen"
    hh = rows(project, "hh")
    assert hh[0]["chosen"] == "\n\nHuman: Be brief.\n\nCapital of France?\n\nAssistant: Paris."
    raw = rows(project, "raw")
    assert len(raw) == 4 and raw[0]["edited"] == edit.text and raw[0]["chosen"] == "Paris." and raw[0]["chosen_was_left"] is True
    assert raw[1]["chosen_was_left"] is False and raw[0]["time_on_task_ms"] == 12000


def test_an_export_is_a_snapshot_with_its_file_sha256_card_and_download(dataset, django_capture_on_commit_callbacks, member_of):
    project = dataset[0]
    with django_capture_on_commit_callbacks() as sent:
        snapshot = export_start(project=project, format="trl-preference", filters={"negligible": "exclude"})
    assert snapshot.state == JobState.QUEUED and len(sent) == 1
    snapshot = export_execute(snapshot_id=snapshot.pk)
    assert export_execute(snapshot_id=snapshot.pk).sha256 == snapshot.sha256  # a second run is a no-op
    path = Path(django_settings.ARTIFACTS_DIR) / snapshot.path
    data = path.read_bytes()
    assert snapshot.state == JobState.SUCCEEDED and hashlib.sha256(data).hexdigest() == snapshot.sha256
    assert snapshot.row_count == 5 == len(data.splitlines())
    assert "| significantly_better | 2 |" in snapshot.card and "negligible: exclude" in snapshot.card
    assert path.with_suffix(".README.md").read_text() == snapshot.card

    lead = member_of(project, Role.LEAD)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=lead).key}")
    download = client.get(reverse("api-export-download", kwargs={"snapshot_id": snapshot.pk}))
    assert download.status_code == 200 and b"".join(download.streaming_content) == data
    labeler = APIClient()
    labeler.force_authenticate(member_of(project, Role.LABELER))
    assert labeler.get(reverse("api-export-download", kwargs={"snapshot_id": snapshot.pk})).status_code == 404
    assert labeler.get(reverse("api-exports", kwargs={"slug": project.slug})).status_code == 403


def test_the_export_api_validates_then_queues(dataset, member_of, django_capture_on_commit_callbacks):
    project = dataset[0]
    client = APIClient()
    client.force_authenticate(member_of(project, Role.LEAD))
    url = reverse("api-exports", kwargs={"slug": project.slug})
    bad = client.post(url, {"format": "trl-preference", "filters": {"aggregation": "mean"}}, format="json")
    assert bad.status_code == 400 and "aggregation" in bad.json()["detail"]
    assert client.post(url, {"format": "csv"}, format="json").status_code == 400
    # the retired spelling of file_format (or any typo) is named, not read as jsonl
    retired = client.post(url, {"format": "kto", "parquet": True}, format="json")
    assert retired.status_code == 400 and retired.json()["parquet"] == [
        "Unknown field; known: format, filters, file_format."
    ]
    with django_capture_on_commit_callbacks() as sent:
        ok = client.post(url, {"format": "kto", "file_format": "parquet"}, format="json")
    assert ok.status_code == 202 and ok.json()["state"] == "queued" and len(sent) == 1
    assert [(e["format"], e["file_format"]) for e in client.get(url).json()] == [("kto", "parquet")]


def test_parquet_exports_hold_the_same_rows(dataset):
    import pyarrow.parquet as pq

    project = dataset[0]
    snapshot = export_execute(snapshot_id=export_start(project=project, format="trl-preference", file_format="parquet").pk)
    table = pq.read_table(Path(django_settings.ARTIFACTS_DIR) / snapshot.path)
    assert table.num_rows == snapshot.row_count == 6
    assert table.column("chosen").to_pylist()[0] == [{"role": "assistant", "content": "Paris."}]


def test_the_command_writes_the_file_where_asked(dataset, tmp_path, capsys):
    project = dataset[0]
    out = tmp_path / "export.jsonl"
    call_command("export_dataset", project.slug, "--format", "sft", "--out", str(out))
    assert len(out.read_text().splitlines()) == 4 and "4 rows, sha256" in capsys.readouterr().out
    assert all(json.loads(line)["messages"][-1]["role"] == "assistant" for line in out.read_text().splitlines())


def csv_export(project, format):
    import csv

    snapshot = export_execute(snapshot_id=export_start(project=project, format=format, file_format="csv").pk)
    assert snapshot.state == JobState.SUCCEEDED, snapshot.error
    path = Path(django_settings.ARTIFACTS_DIR) / snapshot.path
    assert path.suffix == ".csv" and hashlib.sha256(path.read_bytes()).hexdigest() == snapshot.sha256
    with path.open(newline="", encoding="utf-8") as f:
        return snapshot, list(csv.DictReader(f))


def test_csv_exports_quote_formula_cells_and_keep_everything_else(dataset):
    project, c1, c2, edit = dataset
    Response.objects.filter(pk=c1.response_b_id).update(text='=HYPERLINK("http://evil.example","click")')
    Response.objects.filter(pk=edit.pk).update(text="@SUM(A1:A9) and +1 -1")
    snapshot, table = csv_export(project, "trl-preference-text")
    expected = rows(project, "trl-preference-text")
    assert len(table) == len(expected) == snapshot.row_count
    cells = [cell for row in table for cell in row.values()]
    assert not [c for c in cells if c.startswith(("=", "+", "-", "@", "\t", "\r"))]  # nothing a spreadsheet runs
    assert "'=HYPERLINK(\"http://evil.example\",\"click\")" in cells and "'@SUM(A1:A9) and +1 -1" in cells
    assert [r["prompt"] for r in table] == [r["prompt"] for r in expected]
    assert "leading `'`" in snapshot.card and 'load_dataset("csv"' in snapshot.card
    # conversational rows: nested columns are JSON text holding exactly the JSONL values
    _, table = csv_export(project, "trl-preference")
    expected = rows(project, "trl-preference")
    assert [json.loads(r["chosen"]) for r in table] == [r["chosen"] for r in expected]


def test_an_unknown_file_format_is_refused(dataset):
    project, *_ = dataset
    with pytest.raises(ExportError, match="file_format"):
        export_start(project=project, format="raw", file_format="xlsx")


def test_the_dataset_card_keeps_a_project_name_inert(dataset):
    project, *_ = dataset
    project.name = "<img src=x onerror=alert(1)> [click](javascript:alert(1)) # `x`"
    project.save()
    snapshot = export_execute(snapshot_id=export_start(project=project, format="raw").pk)
    title = snapshot.card.splitlines()[0]
    assert "<img" not in title and "&lt;img src=x onerror=alert(1)&gt;" in title
    assert "\\[click\\]" in title and "\\`x\\`" in title
    from annotation.rendering import render_markdown

    rendered = render_markdown(snapshot.card)
    assert "<img" not in rendered and 'href="javascript' not in rendered


@pytest.mark.django_db
def test_the_export_listing_numbers_a_projects_exports_from_one_whatever_the_rounds_wrote(member_of):
    from annotation.models import DatasetSnapshot, SnapshotPurpose

    project = ProjectFactory()
    for purpose in (SnapshotPurpose.REWARD_MODEL, SnapshotPurpose.DPO, SnapshotPurpose.EVALUATION):
        DatasetSnapshot.objects.create(project=project, purpose=purpose, format="trl-preference")
    lead = member_of(project, Role.LEAD)
    first, second = (export_start(project=project, user=lead, format="raw") for _ in range(2))
    client = APIClient()
    client.force_authenticate(lead)
    listed = client.get(reverse("api-exports", kwargs={"slug": project.slug})).json()
    assert [(row["id"], row["number"]) for row in listed] == [(second.pk, 2), (first.pk, 1)]


@pytest.mark.django_db
@pytest.mark.parametrize("aggregation", ["each", "majority"])
def test_an_export_reports_judgments_read_of_total_and_an_eta_while_it_writes(monkeypatch, member_of, aggregation):
    import annotation.services.exports as service
    from annotation.exports import ReadCounter
    from annotation.models import DatasetSnapshot

    project = ProjectFactory()
    for i in range(6):
        JudgmentFactory(assignment__comparison=ComparisonFactory(prompt=PromptFactory(project=project, messages=[{"role": "user", "content": f"q{i}"}])))
    monkeypatch.setattr(service, "REPORT_EVERY_S", 0.0)  # a report after every row
    counter, reports = ReadCounter(), []
    filters = ExportFilters.from_dict({"aggregation": aggregation})
    rows = export_rows(project=project, format="trl-preference", filters=filters, counter=counter)
    from annotation.exports import CardStats

    stats = CardStats()
    for row in service._reporting(rows, counter=counter, total=6, stats=stats, report=reports.append):
        stats.add(row)
    done = [r["done"] for r in reports]  # majority reads a comparison's judgments before its row
    assert done == sorted(done) and done[-1] == 6 and len(reports) >= 5 and {r["total"] for r in reports} == {6}
    assert reports[-1]["eta_s"] == 0 and all(r["unit"] == "judgments" and r["elapsed_s"] >= 0 for r in reports)
    # the job itself: progress written while running, cleared when it succeeded
    snapshot = export_start(project=project, user=member_of(project, Role.LEAD), format="raw")
    seen = []
    original = service._reporting

    def spying(rows, **kwargs):
        report = kwargs.pop("report")
        return original(rows, report=lambda p: (seen.append(p), report(p)), **kwargs)

    monkeypatch.setattr(service, "_reporting", spying)
    done = export_execute(snapshot_id=snapshot.pk)
    assert done.state == JobState.SUCCEEDED and seen[-1]["done"] == seen[-1]["total"] == 6
    assert DatasetSnapshot.objects.get(pk=snapshot.pk).progress == {}

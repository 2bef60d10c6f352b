import json

import pytest

from annotation.importers import MAX_ERRORS_LISTED, ImportValidationError, parse_mt_bench


def test_mt_bench_rows_become_first_turn_prompts_with_the_rest_kept():
    rows = [json.dumps({"question_id": 101, "category": "math", "turns": ["2+2?", "And 3+3?"], "reference": ["4", "6"]})]
    (prompt,) = parse_mt_bench(rows)
    assert prompt.messages == [{"role": "user", "content": "2+2?"}]
    assert prompt.category == "math" and prompt.source == "mt-bench:101"
    assert prompt.metadata == {"question_id": 101, "later_turns": ["And 3+3?"], "reference": ["4", "6"]}


def test_a_bad_file_names_every_bad_line_and_field():
    rows = [
        json.dumps({"question_id": 1, "category": "x", "turns": ["ok"]}),
        "{not json",
        json.dumps({"question_id": 3, "turns": []}),
        json.dumps([1, 2]),
        json.dumps({"question_id": 5, "category": 7, "turns": ["fine"]}),
    ]
    with pytest.raises(ImportValidationError) as caught:
        parse_mt_bench(rows)
    errors = [(e.line, e.field) for e in caught.value.errors]
    assert errors == [(2, "(json)"), (3, "turns"), (4, "(json)"), (5, "category")]


def test_only_the_first_errors_are_listed_but_all_are_counted():
    rows = ["{}"] * (MAX_ERRORS_LISTED + 7)
    with pytest.raises(ImportValidationError) as caught:
        parse_mt_bench(rows)
    assert len(caught.value.errors) == MAX_ERRORS_LISTED and caught.value.total == MAX_ERRORS_LISTED + 7
    assert "and 7 more" in str(caught.value)

"""Import files, read as bounded streams (``reading``) and parsed into validated records, one
parser per format (``formats``). Nothing here writes: annotation/services/uploads.py does."""

from annotation.importers.formats import (
    PreferencePair,
    hh_records,
    mt_bench_records,
    parse_hh,
    parse_mt_bench,
    parse_prompt_csv,
    parse_prompt_jsonl,
    prompt_csv_records,
    prompt_jsonl_records,
)
from annotation.importers.reading import (
    LIMIT_SETTINGS,
    MAX_ERRORS_LISTED,
    ImportLimits,
    ImportValidationError,
    LineError,
    LineErrors,
    read_lines,
)

__all__ = [
    "LIMIT_SETTINGS", "MAX_ERRORS_LISTED", "ImportLimits", "ImportValidationError", "LineError", "LineErrors",
    "PreferencePair", "hh_records", "mt_bench_records", "parse_hh", "parse_mt_bench", "parse_prompt_csv",
    "parse_prompt_jsonl", "prompt_csv_records", "prompt_jsonl_records", "read_lines",
]

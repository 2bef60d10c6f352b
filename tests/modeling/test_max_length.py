"""A round's max_length fits its data: the longest pair rounded up to 64 tokens, at most the cap and
the model's context; pairs over an explicit or capped limit lose their oldest turns or, when that
cannot fit them, are dropped, and are counted (the RM and DPO alike), and the limit used is in the
round's metrics."""

import pytest

from modeling.ml.training import MAX_LENGTH_STEP, TrainConfig, fit_max_length, pair_length, train_dpo, train_reward_model
from modeling.services.rounds import DEFAULT_CONFIG


@pytest.mark.parametrize("lengths, cap, fitted", [
    ([10, 70, 30], 2048, 128),
    ([64], 2048, 64),
    ([65], 2048, 128),
    ([], 2048, MAX_LENGTH_STEP),
    ([5000], 2048, 2048),
    ([300], 256, 256),
])
def test_fit_max_length_rounds_the_longest_up_and_keeps_to_the_cap(lengths, cap, fitted):
    assert fit_max_length(lengths, cap=cap) == fitted


def test_rounds_fit_max_length_by_default():
    assert DEFAULT_CONFIG["rm"]["max_length"] is None and DEFAULT_CONFIG["dpo"]["max_length"] is None
    assert TrainConfig().max_length is None and TrainConfig().max_length_cap == 2048


def _rows(n_short: int, long_words: int) -> list[dict]:
    def row(i, answer):
        return {
            "prompt": [{"role": "user", "content": f"hello {i}"}], "chosen": [{"role": "assistant", "content": answer}],
            "rejected": [{"role": "assistant", "content": "no"}], "margin": 0.0, "strength": "better",
        }

    rows = [row(i, "yes good answer") for i in range(n_short)]
    rows.append(row(99, " ".join(["python"] * long_words)))
    return rows


def test_the_reward_model_fits_its_max_length_to_the_data_and_drops_what_the_cap_cuts(tiny_model_dir, tmp_path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    rows = _rows(5, long_words=150)
    longest = max(pair_length(tokenizer, r) for r in rows)
    config = TrainConfig(max_steps=1, batch_size=2, lora=False, bf16=False)
    result = train_reward_model(base_dir=str(tiny_model_dir), rows=rows, heldout=rows[:2], output_dir=str(tmp_path / "rm"), config=config)
    assert result.max_length == fit_max_length([longest], cap=2048) and result.max_length >= longest
    assert result.dropped_too_long == 0 and result.train_pairs == 6
    # The tiny model's context is 512 tokens: a cap above it is lowered to it.
    capped = TrainConfig(max_steps=1, batch_size=2, lora=False, bf16=False, max_length_cap=4096)
    rows_long = _rows(5, long_words=600)
    result = train_reward_model(base_dir=str(tiny_model_dir), rows=rows_long, heldout=[], output_dir=str(tmp_path / "rm2"), config=capped)
    assert result.max_length == 512 and result.dropped_too_long == 1 and result.train_pairs == 5


def test_dpo_drops_and_counts_pairs_over_an_explicit_max_length(tiny_model_dir, tmp_path):
    rows = _rows(4, long_words=150)
    config = TrainConfig(max_steps=1, batch_size=2, max_length=64, bf16=False)
    result = train_dpo(policy_dir=str(tiny_model_dir), rows=rows, heldout=[], output_dir=str(tmp_path / "dpo"), config=config)
    assert (result.max_length, result.dropped_too_long, result.train_pairs) == (64, 1, 4)


def _long_talk(turns: int) -> dict:
    """A pair whose conversation has ``turns`` earlier exchanges of ~40 words each, then a question."""
    prompt = [{"role": "system", "content": "Be brief."}]
    for i in range(turns):
        prompt += [{"role": "user", "content": f"question {i} " + "python list " * 20},
                   {"role": "assistant", "content": f"answer {i} " + "hello yes " * 20}]
    prompt.append({"role": "user", "content": "and the last question?"})
    return {"prompt": prompt, "chosen": [{"role": "assistant", "content": "yes good answer"}],
            "rejected": [{"role": "assistant", "content": "no"}], "margin": 0.0, "strength": "better"}


def test_a_long_conversation_loses_its_oldest_exchanges_until_it_fits(tiny_model_dir):
    from transformers import AutoTokenizer

    from modeling.ml.training import trim_oldest_turns

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    row = _long_talk(turns=4)
    full = pair_length(tokenizer, row)
    limit = pair_length(tokenizer, _long_talk(turns=2)) + 5  # room for two exchanges, not four
    assert full > limit
    trimmed = trim_oldest_turns(tokenizer, row, limit)
    assert pair_length(tokenizer, trimmed) <= limit
    # the system message, then the two newest exchanges, then the question: whole turns, in order
    assert trimmed["prompt"] == [row["prompt"][0], *row["prompt"][-5:]]
    assert trimmed["chosen"] == row["chosen"] and trimmed["rejected"] == row["rejected"]
    # even the last question and the answers do not fit: nothing to keep
    assert trim_oldest_turns(tokenizer, row, pair_length(tokenizer, _long_talk(turns=0)) - 1) is None


def test_training_keeps_a_long_conversation_by_its_newest_turns_unless_told_to_drop_it(tiny_model_dir, tmp_path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    limit = -(-pair_length(tokenizer, _long_talk(turns=1)) // MAX_LENGTH_STEP) * MAX_LENGTH_STEP
    rows = [_long_talk(turns=0), _long_talk(turns=0), _long_talk(turns=6)]
    assert pair_length(tokenizer, rows[2]) > limit
    trim = TrainConfig(max_steps=1, batch_size=2, max_length=limit, bf16=False)
    result = train_dpo(policy_dir=str(tiny_model_dir), rows=rows, heldout=[], output_dir=str(tmp_path / "dpo"), config=trim)
    assert (result.train_pairs, result.trimmed_turns, result.dropped_too_long) == (3, 1, 0)
    drop = TrainConfig(max_steps=1, batch_size=2, max_length=limit, bf16=False, lora=False, trim_turns=False)
    result = train_reward_model(base_dir=str(tiny_model_dir), rows=rows, heldout=[], output_dir=str(tmp_path / "rm"), config=drop)
    assert (result.train_pairs, result.trimmed_turns, result.dropped_too_long) == (2, 0, 1)

"""Weight averaging (modeling/ml/averaging.py): the mean of checkpoints of one base is their
element-wise mean and a model that loads and generates; other bases are refused by name."""

import json

import pytest

from modeling.ml.averaging import AveragingError, average_checkpoints, greedy_soup
from tests.modeling.tiny import build_model_dir, build_tokenizer


def _params(model_dir):
    from transformers import AutoModelForCausalLM

    return {name: p.detach().clone() for name, p in AutoModelForCausalLM.from_pretrained(model_dir).named_parameters()}


def test_two_checkpoints_of_one_base_average_to_their_elementwise_mean_and_generate(tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    a, b = build_model_dir(tmp_path / "a", seed=1), build_model_dir(tmp_path / "b", seed=2)
    done = average_checkpoints([a, b], tmp_path / "mean")
    assert done["models"] == 2 and done["weights"] == [0.5, 0.5] and done["parameters"] > 0
    pa, pb, mean = _params(a), _params(b), _params(tmp_path / "mean")
    assert set(mean) == set(pa)
    for name in pa:
        assert not torch.equal(pa[name], pb[name]) or name.endswith("norm.weight")  # the seeds differ
        torch.testing.assert_close(mean[name], (pa[name] + pb[name]) / 2)
    # weighted: 3 parts of a, 1 of b
    average_checkpoints([a, b], tmp_path / "weighted", weights=[3, 1])
    weighted = _params(tmp_path / "weighted")
    for name in pa:
        torch.testing.assert_close(weighted[name], 0.75 * pa[name] + 0.25 * pb[name])
    # it is a model: it loads with its tokenizer and generates
    tokenizer = build_tokenizer()
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "mean")
    ids = tokenizer.apply_chat_template([{"role": "user", "content": "hello"}], add_generation_prompt=True, return_tensors="pt")
    ids = ids["input_ids"] if hasattr(ids, "keys") else ids
    out = model.generate(ids, max_new_tokens=4, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    assert out.shape[1] == ids.shape[1] + 4
    assert (tmp_path / "mean" / "tokenizer_config.json").exists()


def test_checkpoints_of_different_bases_are_refused_and_nothing_is_written(tmp_path):
    a = build_model_dir(tmp_path / "a")
    reward = build_model_dir(tmp_path / "rm", classification=True)
    with pytest.raises(AveragingError, match="different bases: a has architectures=.*LlamaForCausalLM.*rm has"):
        average_checkpoints([a, reward], tmp_path / "out")
    wider = build_model_dir(tmp_path / "wider")
    config = json.loads((wider / "config.json").read_text())
    (wider / "config.json").write_text(json.dumps({**config, "hidden_size": 64}))
    with pytest.raises(AveragingError, match="hidden_size=32.*hidden_size=64"):
        average_checkpoints([a, wider], tmp_path / "out")
    assert not (tmp_path / "out").exists()
    with pytest.raises(AveragingError, match="one weight above 0"):
        average_checkpoints([a, a], tmp_path / "out", weights=[1, 0])
    (tmp_path / "empty").mkdir()
    with pytest.raises(AveragingError, match="no readable config.json"):
        average_checkpoints([a, tmp_path / "empty"], tmp_path / "out")


def test_a_greedy_soup_keeps_a_candidate_only_when_the_validation_score_holds(tmp_path):
    a, b, c = (build_model_dir(tmp_path / name, seed=i) for i, name in enumerate("abc"))
    # a stand-in validation metric per folder: the soup of a with c helps, adding b to it hurts
    scores = {"a": 0.70, "b": 0.60, "c": 0.65, "trial-1": 0.72, "trial-2": 0.68}

    def score(model_dir):
        return scores[model_dir.name]

    soup = greedy_soup([b, c, a], score, tmp_path / "work")
    assert soup["chosen"] == ["a", "c"] and soup["validation"] == 0.72
    assert [t["kept"] for t in soup["tried"]] == [True, False]
    assert (tmp_path / "work" / "soup" / "model.safetensors").exists()
    assert not list((tmp_path / "work").glob("trial-*"))  # trials are removed

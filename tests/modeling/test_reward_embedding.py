"""RewardScorer.score_and_embed (modeling/ml/reward.py): the state the reward head reads, for
active selection's pair features (modeling/ml/selection.py). A tiny model built from a config."""

import pytest

from modeling.ml.reward import RewardScorer

CONVERSATIONS = [[{"role": "user", "content": "hello"}]] * 4
# Lengths out of order, so batches are padded and reordered by length.
RESPONSES = ["yes", "no thank you kind user " * 6, "good", "python list hello yes"]


def test_score_and_embed_gives_score_s_rewards_and_the_state_the_head_reads(tiny_reward_dir):
    import torch

    scorer = RewardScorer(str(tiny_reward_dir), device="cpu", batch_size=3)
    scores, states = scorer.score_and_embed(CONVERSATIONS, RESPONSES)
    assert scores == pytest.approx(scorer.score(CONVERSATIONS, RESPONSES), abs=1e-5)
    assert len(states) == len(RESPONSES)
    assert all(len(s) == scorer.model.config.hidden_size for s in states)
    # The scalar head applied to the embedding is the reward: it is the state the head reads
    # (after the final norm, at the last non-pad token), not a neighbouring position or layer.
    head = scorer.model.score.weight.detach()[0]
    assert [float(head @ torch.tensor(s)) for s in states] == pytest.approx(scores, abs=1e-4)
    assert len({round(s[0], 5) for s in states}) == len(RESPONSES)


def test_an_embedding_does_not_depend_on_the_batch_it_was_padded_in(tiny_reward_dir):
    scorer = RewardScorer(str(tiny_reward_dir), device="cpu", batch_size=4)
    _, together = scorer.score_and_embed(CONVERSATIONS, RESPONSES)
    for conversation, response, state in zip(CONVERSATIONS, RESPONSES, together):
        _, (alone,) = scorer.score_and_embed([conversation], [response])
        assert alone == pytest.approx(state, abs=1e-4)

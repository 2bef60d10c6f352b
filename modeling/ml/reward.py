"""Scoring responses with a reward model (a sequence-classification head with one output).

Plain Python; torch/transformers imported inside. Used by rejection sampling and evaluation.
"""

from __future__ import annotations

from functools import lru_cache


class RewardScorer:
    def __init__(self, model_dir: str, device: str | None = None, batch_size: int = 8):
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from modeling.ml.devices import pick_device

        self.device = device or pick_device()
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        # A text over max_length loses its start, never its end: the reward is read at the last
        # token, and two answers to one long conversation cut from the right would both be cut
        # inside the shared conversation, scoring the same (9 of HH's 466 held-out pairs at 512
        # tokens did: counted as wrong, they cost the reward model ~2 points of accuracy).
        self.tokenizer.truncation_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModelForSequenceClassification.from_pretrained(model_dir).to(self.device).eval()
        if self.model.config.pad_token_id is None:
            self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.batch_size = batch_size
        self._torch = torch

    def text(self, messages: list[dict], response: str) -> str:
        return self.tokenizer.apply_chat_template(
            [*messages, {"role": "assistant", "content": response}], tokenize=False
        )

    def score(self, conversations: list[list[dict]], responses: list[str], max_length: int = 1024) -> list[float]:
        """The reward of each response to its conversation (read at the last non-pad token).

        Texts are batched by length, so a batch is padded to its own longest text, not to the
        longest of eight drawn at random (held-out HH pairs: mostly ~150 tokens, a few 512)."""
        return self._run(conversations, responses, max_length, embed=False)[0]

    def score_and_embed(
        self, conversations: list[list[dict]], responses: list[str], max_length: int = 1024
    ) -> tuple[list[float], list[list[float]]]:
        """``score``'s rewards, and with each the state its head reads: the last layer's hidden
        state (after the final norm) at the last non-pad token. Active selection
        (modeling/ml/selection.py) takes a pair's feature as the difference of its two states."""
        return self._run(conversations, responses, max_length, embed=True)

    def _run(self, conversations, responses, max_length: int, *, embed: bool):
        texts = [self.text(m, r) for m, r in zip(conversations, responses)]
        encoded = self.tokenizer(texts, truncation=True, max_length=max_length, add_special_tokens=False)["input_ids"]
        order = sorted(range(len(texts)), key=lambda i: len(encoded[i]))
        scores: list[float] = [0.0] * len(texts)
        states: list[list[float]] = [[] for _ in texts] if embed else []
        torch = self._torch
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            batch = self.tokenizer.pad({"input_ids": [encoded[i] for i in chunk]}, return_tensors="pt").to(self.device)
            with torch.inference_mode():
                out = self.model(**batch, output_hidden_states=embed)
            for i, value in zip(chunk, out.logits[:, 0].float().cpu()):
                scores[i] = float(value)
            if embed:
                # The position the head reads: the rightmost token that is not padding, found as
                # the sequence-classification model finds it (either padding side).
                ids = batch["input_ids"]
                positions = torch.arange(ids.shape[-1], device=ids.device)
                last = (positions * (ids != self.model.config.pad_token_id)).argmax(-1)
                rows = out.hidden_states[-1][torch.arange(len(chunk), device=ids.device), last].float().cpu()
                for i, row in zip(chunk, rows):
                    states[i] = row.tolist()
        return scores, states


@lru_cache(maxsize=2)
def scorer_for(model_dir: str) -> RewardScorer:
    """One loaded reward model per process and directory."""
    return RewardScorer(model_dir)

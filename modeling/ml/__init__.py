"""Plain-Python ML code: generation backends, reward-model and DPO training, evaluation.

No Django imports here (a test enforces it). torch, transformers, trl and peft are imported
inside functions, so importing this package costs nothing and the web process never loads them.
"""

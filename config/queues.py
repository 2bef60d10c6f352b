"""The Celery queues, named in one place.

- ``default``: short control-plane work (lease expiry, bookkeeping, exports).
- ``gpu``: anything that loads a model (sampling with local models, training, evaluation).
  Its worker runs one task at a time (``--concurrency 1``) so a loaded model owns the device.
- ``live``: the answers of live dialogues, streamed while a labeler watches. Its own worker
  (threads, a few turns at once, models kept loaded) so a round training on the ``gpu`` worker
  never makes a labeler wait.
"""

from kombu import Exchange, Queue

DEFAULT_QUEUE = "default"
GPU_QUEUE = "gpu"
LIVE_QUEUE = "live"
QUEUES = (DEFAULT_QUEUE, GPU_QUEUE, LIVE_QUEUE)

CELERY_TASK_QUEUES = tuple(Queue(name, Exchange(name), routing_key=name) for name in QUEUES)

# Tasks not listed go to ``default``.
CELERY_TASK_ROUTES = {
    "modeling.tasks.ping_gpu": {"queue": GPU_QUEUE},
    "modeling.tasks.sample_*": {"queue": GPU_QUEUE},
    "modeling.tasks.round_run": {"queue": GPU_QUEUE},
    # A local judge loads its model; an endpoint judge is sent to the row's queue (default) instead.
    "modeling.tasks.judge_run": {"queue": GPU_QUEUE},
    "modeling.tasks.live_turn_run": {"queue": LIVE_QUEUE},
}

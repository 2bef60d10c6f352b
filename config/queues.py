"""The Celery queues, named in one place.

- ``default``: short control-plane work (lease expiry, bookkeeping, exports).
- ``gpu``: anything that loads a model (sampling with local models, training, evaluation).
  Its worker runs one task at a time (``--concurrency 1``) so a loaded model owns the device.
"""

from kombu import Exchange, Queue

DEFAULT_QUEUE = "default"
GPU_QUEUE = "gpu"
QUEUES = (DEFAULT_QUEUE, GPU_QUEUE)

CELERY_TASK_QUEUES = tuple(Queue(name, Exchange(name), routing_key=name) for name in QUEUES)

# Tasks not listed go to ``default``.
CELERY_TASK_ROUTES = {
    "modeling.tasks.ping_gpu": {"queue": GPU_QUEUE},
    "modeling.tasks.sample_*": {"queue": GPU_QUEUE},
    "modeling.tasks.round_run": {"queue": GPU_QUEUE},
}

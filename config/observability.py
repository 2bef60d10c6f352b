"""Request and task ids in every log line, and who is acting right now (for the audit log).

- ``RequestContextMiddleware`` gives each request an id (the caller's ``X-Request-ID`` when it is
  a sane token, else a new one), answers it in the ``X-Request-ID`` header, logs one line per
  request, and keeps the request in a context variable so code far from the view (model signals,
  services) can ask who is acting: ``current_user()``.
- Celery: a task sent while a request is handled carries that request's id in its message
  headers; the worker logs under the task's id and the request id that caused it.
- ``ContextFilter`` puts both ids on every log record; ``JsonFormatter`` writes one JSON object per
  line (production default) for log shippers.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from contextvars import ContextVar

from django.db import DatabaseError

_request_id: ContextVar[str] = ContextVar("request_id", default="-")
_task_id: ContextVar[str] = ContextVar("task_id", default="-")
_request: ContextVar[object | None] = ContextVar("request", default=None)

_SANE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
REQUEST_ID_HEADER = "request_id"  # Celery message header
access_log = logging.getLogger("arbiter.request")


def request_id() -> str:
    return _request_id.get()


def current_user():
    """The authenticated user of the request being handled in this context, or None.

    Read at call time, so a DRF token (authenticated inside the view, after the middleware ran)
    counts too: DRF sets the user on the underlying Django request.
    """
    request = _request.get()
    user = getattr(request, "user", None)
    return user if user is not None and user.is_authenticated else None


class RequestContextMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        given = request.headers.get("X-Request-ID", "")
        rid = given if _SANE_ID.match(given) else uuid.uuid4().hex
        request.request_id = rid
        tokens = (_request_id.set(rid), _request.set(request))
        started = time.perf_counter()
        try:
            response = self.get_response(request)
            response["X-Request-ID"] = rid
            if access_log.isEnabledFor(logging.INFO):
                # Loading the user may query the session. When the database is what failed this
                # request, the log line must not fail again and turn its 503 into a 500.
                try:
                    user = current_user()
                except DatabaseError:
                    user = None
                access_log.info(
                    "%s %s %s", request.method, request.path, response.status_code,
                    extra={
                        "method": request.method, "path": request.path, "status": response.status_code,
                        "duration_ms": round((time.perf_counter() - started) * 1000, 1),
                        "user": user.get_username() if user else None,
                    },
                )
            return response
        finally:
            _request_id.reset(tokens[0])
            _request.reset(tokens[1])


class ContextFilter(logging.Filter):
    """Adds ``request_id`` and ``task_id`` to every record (``-`` outside a request or task)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = _request_id.get()
        record.task_id = _task_id.get()
        return True


class ClientErrorsWithoutTraceback(logging.Filter):
    """A 403 or 404 is an answer, not a crash: Django logs each with the exception attached, so a
    labeler opening a lead's page printed a traceback. Keep the line, drop the traceback, for
    responses below 500."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == "django.request" and getattr(record, "status_code", 500) < 500:
            record.exc_info, record.exc_text = None, None
        return True


_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "request_id", "task_id"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, ids, and any ``extra`` fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
            "request_id": getattr(record, "request_id", "-"),
            "task_id": getattr(record, "task_id", "-"),
        }
        entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")})
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


JsonFormatter.converter = time.gmtime


# --- Celery ------------------------------------------------------------------------------------


def connect_celery_signals() -> None:
    """Carry the request id into task messages and log tasks under their own ids (config.celery)."""
    from celery.signals import before_task_publish, task_postrun, task_prerun

    @before_task_publish.connect(weak=False)
    def _publish(headers=None, **_):
        rid = _request_id.get()
        if headers is not None and rid != "-":
            headers.setdefault(REQUEST_ID_HEADER, rid)

    @task_prerun.connect(weak=False)
    def _prerun(task_id=None, task=None, **_):
        _task_id.set(task_id or "-")
        rid = getattr(task.request, REQUEST_ID_HEADER, None) if task is not None else None
        _request_id.set(rid if isinstance(rid, str) and _SANE_ID.match(rid) else "-")

    @task_postrun.connect(weak=False)
    def _postrun(**_):
        _task_id.set("-")
        _request_id.set("-")

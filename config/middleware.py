"""A lost database connection is a 503 with Retry-After, not a 500.

PostgreSQL restarting, a failover, or an administrator terminating backends all kill a
connection under a request that is already running (between requests, CONN_HEALTH_CHECKS
notices the dead connection and opens a new one). Such a request could not have written
anything: every write is one transaction, which the server rolled back when the connection
died. So the honest answer is "not now, try again" (a client may retry a submit with the same
idempotency key), and Django closes the broken connection when the request ends, so the next
request connects afresh.

Only errors raised by a view reach ``process_exception``: that is where every query of this app
runs (DRF authentication included, since it happens inside the API view).
"""

from __future__ import annotations

import logging

from django.db import InterfaceError, OperationalError
from django.http import HttpResponse, JsonResponse

logger = logging.getLogger(__name__)

RETRY_AFTER_S = 5
DETAIL = "The database is unavailable right now; nothing was saved. Try again in a few seconds."
PAGE = (
    "<!doctype html><html lang=en><meta charset=utf-8><title>Try again shortly</title>"
    "<h1>Try again shortly</h1><p>The database is unavailable right now; nothing was saved. "
    "Reload this page in a few seconds.</p></html>"
)


class DatabaseUnavailableMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_exception(self, request, exception):
        if not isinstance(exception, (OperationalError, InterfaceError)):
            return None
        # With a traceback: on SQLite a schema error is an OperationalError too, and must not hide.
        logger.error("database unavailable during %s %s", request.method, request.path, exc_info=exception)
        if request.path.startswith("/api/"):
            # "error" is the key every other API error uses; "code" the one this answer is known by.
            body = {"error": "database_unavailable", "code": "database_unavailable", "detail": DETAIL}
            response = JsonResponse(body, status=503)
        else:
            response = HttpResponse(PAGE, status=503, content_type="text/html; charset=utf-8")
        response["Retry-After"] = str(RETRY_AFTER_S)
        response["Cache-Control"] = "no-store"
        return response

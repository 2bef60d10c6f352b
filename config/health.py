"""GET /healthz for load balancers: the web process answers, the database and the broker are
reachable; the workers that answered a ping are listed (their absence alone is not a failure of
this web process, so it does not turn the answer to 503)."""

from __future__ import annotations

import time

from django.db import connection
from django.http import JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from config.celery import app


def _database() -> dict:
    started = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return {"ok": True, "ms": round((time.perf_counter() - started) * 1000, 1)}


def _broker() -> dict:
    started = time.perf_counter()
    with app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, timeout=2)
    return {"ok": True, "ms": round((time.perf_counter() - started) * 1000, 1)}


def _workers() -> list[str]:
    replies = app.control.ping(timeout=1.0) or []
    return sorted(name for reply in replies for name in reply)


@never_cache
@require_GET
def healthz(request):
    checks, healthy = {}, True
    for name, check in (("database", _database), ("broker", _broker)):
        try:
            checks[name] = check()
        except Exception as exc:  # any failure of a dependency is reported, never raised
            checks[name] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:300]}
            healthy = False
    try:
        checks["workers"] = _workers() if checks["broker"]["ok"] else []
    except Exception as exc:
        checks["workers"] = []
        checks["workers_error"] = f"{type(exc).__name__}: {exc}"[:300]
    return JsonResponse({"ok": healthy, **checks}, status=200 if healthy else 503)

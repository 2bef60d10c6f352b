"""The web process never imports torch: models run on workers only."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SERVE_PAGES = """
import sys, io
from wsgiref.util import setup_testing_defaults
import config.wsgi
import annotation.views, annotation.tasks, modeling.views, modeling.tasks, modeling.services, modeling.ml.devices
statuses = []
for path in ("/login/", "/", "/admin/login/"):
    environ = {"PATH_INFO": path, "HTTP_HOST": "localhost"}
    setup_testing_defaults(environ)
    environ["SERVER_NAME"] = "localhost"
    def start_response(status, headers):
        statuses.append(status.split()[0])
    b"".join(config.wsgi.application(environ, start_response))
print(" ".join(statuses))
print(sorted(m for m in ("torch", "transformers", "trl", "peft", "accelerate", "llama_cpp") if m in sys.modules))
"""


def test_serving_pages_from_the_wsgi_app_loads_no_ml_library():
    result = subprocess.run(
        [sys.executable, "-c", SERVE_PAGES], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    statuses, loaded = result.stdout.strip().splitlines()[-2:]
    assert statuses == "200 302 200"
    assert loaded == "[]"


def test_celery_app_loads_no_ml_library_either():
    result = subprocess.run(
        [sys.executable, "-c", "import config, django; django.setup(); import sys; print('torch' in sys.modules)"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"

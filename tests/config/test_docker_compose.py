"""docker-compose.yml is valid and every command points at something that exists here.

No Docker engine runs on CI machines, so the file is checked by parsing it.
"""

import importlib
import re
import shlex
from pathlib import Path

import yaml

from config.queues import GPU_QUEUE, LIVE_QUEUE, QUEUES

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
APP_SERVICES = ("web", "worker", "gpu-worker", "live-worker", "beat")


def _command(service: str) -> list[str]:
    command = SERVICES[service]["command"]
    return shlex.split(command) if isinstance(command, str) else command


def _option(argv: list[str], *names: str) -> str:
    for i, arg in enumerate(argv):
        if arg in names:
            return argv[i + 1]
    raise AssertionError(f"none of {names} in {argv}")


def test_the_stack_has_every_service():
    assert set(SERVICES) == {"postgres", "redis", *APP_SERVICES}
    for name in APP_SERVICES:
        assert SERVICES[name]["build"] == "." and SERVICES[name]["image"] == "arbiter:latest"
        assert SERVICES[name]["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_the_image_builds_from_files_that_exist():
    dockerfile = (ROOT / "Dockerfile").read_text()
    for copied in re.findall(r"^COPY (.+) \./$", dockerfile, flags=re.M):
        for name in copied.split():
            assert (ROOT / name).exists(), name


def test_web_migrates_then_serves_the_wsgi_app_with_gunicorn():
    command = " ".join(_command("web"))
    assert "manage.py migrate --noinput" in command and (ROOT / "manage.py").exists()
    module, attribute = re.search(r"gunicorn (\S+):(\S+)", command).groups()
    assert callable(getattr(importlib.import_module(module), attribute))


def test_celery_services_use_the_app_and_the_queues_named_in_config():
    app_module = importlib.import_module("config.celery")
    for name in ("worker", "gpu-worker", "live-worker", "beat"):
        argv = _command(name)
        assert argv[:3] == ["celery", "-A", "config"]
        assert hasattr(app_module, "app")
    assert _option(_command("worker"), "-Q") == "default"
    assert set(_option(_command("worker"), "-Q").split(",")) <= set(QUEUES)
    assert _option(_command("gpu-worker"), "-Q") == GPU_QUEUE
    assert _option(_command("live-worker"), "-Q") == LIVE_QUEUE
    assert _option(_command("beat"), "--schedule")


def test_the_gpu_worker_runs_one_task_at_a_time_on_an_nvidia_device():
    assert _option(_command("gpu-worker"), "--concurrency", "-c") == "1"
    devices = SERVICES["gpu-worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]


def test_the_live_worker_answers_a_few_turns_at_once_in_threads_of_one_process():
    # One process: its loaded models serve every turn (modeling/live_worker.py); threads: a
    # few labelers at once, their decode steps taking turns (modeling/services/live.py).
    command = _command("live-worker")
    assert _option(command, "--pool", "-P") == "threads" and int(_option(command, "--concurrency", "-c")) > 1


def test_the_app_environment_names_settings_the_app_reads():
    settings_source = (ROOT / "config" / "settings.py").read_text()
    env = SERVICES["web"]["environment"]
    assert env["ARBITER_MODE"] == "production"
    for variable in env:
        assert f'"{variable}"' in settings_source, f"{variable} is not read by config/settings.py"
    # production refuses to start without these, so compose must demand them rather than default them
    assert ":?" in env["SECRET_KEY"] and ":?" in env["ALLOWED_HOSTS"]

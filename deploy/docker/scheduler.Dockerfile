# The scheduler service: `docker build -f deploy/docker/scheduler.Dockerfile .` from the repository root.
FROM python:3.11-slim
WORKDIR /app
# Dependencies first (a layer that survives code changes), then the code.
COPY pyproject.toml README.md ./
RUN mkdir -p shared services trainyard && touch shared/__init__.py services/__init__.py trainyard/__init__.py \
 && pip install --no-cache-dir . && pip uninstall -y trainyard
COPY shared shared
COPY services services
COPY trainyard trainyard
RUN pip install --no-cache-dir --no-deps . \
 && useradd --system --uid 10001 trainyard
USER trainyard
ENV TRAINYARD_LOG_LEVEL=INFO \
    PYTHONUNBUFFERED=1
# /metrics for Prometheus (shared/telemetry.py).
EXPOSE 9100
ENV TRAINYARD_METRICS_HOST=0.0.0.0 \
    TRAINYARD_METRICS_PORT=9100
CMD ["python", "-m", "services.scheduler.main"]

# The api service: `docker build -f deploy/docker/api.Dockerfile .` from the repository root.
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
EXPOSE 8000
ENV TRAINYARD_HOST=0.0.0.0 \
    TRAINYARD_PORT=8000
HEALTHCHECK --interval=10s --timeout=3s CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz')"
CMD ["python", "-m", "services.api.main"]

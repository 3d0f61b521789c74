# The trainer: `docker build -f deploy/docker/trainer.Dockerfile .` from the repository root.
# CUDA PyTorch base (Python 3.11, nvcc for mmcv's CUDA ops); the image needs a GPU
# only to train, not to build. Pass --build-arg BASE=... to follow another CUDA.
ARG BASE=pytorch/pytorch:2.5.1-cuda12.4-cudnn9-devel
FROM ${BASE}
WORKDIR /app
# MMDetection's stack in the order it needs (as scripts/setup.sh does): runtime
# deps, mmengine and mmdet without their opencv-python pin, then mmcv built
# against the image's torch for every GPU generation a cluster may have.
ENV TORCH_CUDA_ARCH_LIST="7.0;7.5;8.0;8.6;8.9;9.0" \
    MMCV_WITH_OPS=1 \
    FORCE_CUDA=1
RUN pip install --no-cache-dir "setuptools<84" opencv-python-headless "pycocotools>=2.0.7" scipy shapely \
      terminaltables matplotlib addict yapf termcolor tqdm pyyaml rich \
 && pip install --no-cache-dir --no-deps mmengine==0.10.7 mmdet==3.3.0 \
 && pip install --no-cache-dir --no-build-isolation --no-deps mmcv==2.1.0
COPY pyproject.toml README.md ./
COPY shared shared
COPY services services
COPY trainyard trainyard
# trainyard's own dependencies; torch stays the image's (the `trainer` extra is not installed).
RUN pip install --no-cache-dir . \
 && python -c "import mmcv.ops, mmdet, mmengine, torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)" \
 && useradd --system --uid 10001 --create-home trainyard
USER trainyard
ENV TRAINYARD_LOG_LEVEL=INFO \
    PYTHONUNBUFFERED=1 \
    TRAINYARD_WORK_ROOT=/data/work \
    TRAINYARD_METRICS_HOST=0.0.0.0 \
    TRAINYARD_METRICS_PORT=9100
# /metrics for Prometheus (shared/telemetry.py).
EXPOSE 9100
# On SIGTERM the trainer stops taking runs and ends its attempt (reported, not lost);
# give it the grace period in compose (stop_grace_period) and Kubernetes.
STOPSIGNAL SIGTERM
CMD ["python", "-m", "services.trainer.main"]

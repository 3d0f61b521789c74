#!/usr/bin/env bash
# Creates .venv with everything trainyard needs, in the order MMDetection's
# stack requires. Idempotent: a stamp of the inputs makes a second run instant.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
venv="$root/.venv"
py="${PYTHON:-python3}"

# A pre-built mmcv wheel beside the repository is a cache, never a requirement.
for wheels in "$root/../shared/wheels" "$root/shared_wheels"; do
  if [ -d "$wheels" ]; then
    export PIP_FIND_LINKS="${PIP_FIND_LINKS:+$PIP_FIND_LINKS }$(cd "$wheels" && pwd)"
  fi
done

# The console's browser tests drive the system Chromium; install it once (we run as root).
if [ ! -x /usr/bin/chromium ] && command -v apt-get >/dev/null 2>&1; then
  apt-get install -y chromium >/dev/null || { apt-get update >/dev/null && apt-get install -y chromium >/dev/null; } \
    || echo "setup: chromium unavailable; the browser tests will be skipped" >&2
fi

# The console's charting library (ECharts) from the npm registry, pinned by package-lock.json; the API
# serves it from node_modules, so the browser never fetches it from a CDN. Its own stamp: instant when done.
console_dir="$root/services/api/console"
lock_sum="$(sha256sum "$console_dir/package-lock.json" | cut -d' ' -f1)"
npm_stamp="$console_dir/node_modules/.trainyard-lock"
if [ ! -f "$npm_stamp" ] || [ "$(cat "$npm_stamp")" != "$lock_sum" ] \
   || [ ! -f "$console_dir/node_modules/echarts/dist/echarts.min.js" ]; then
  if ! command -v npm >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
    apt-get install -y npm >/dev/null || { apt-get update >/dev/null && apt-get install -y npm >/dev/null; } || true
  fi
  if command -v npm >/dev/null 2>&1; then
    (cd "$console_dir" && npm ci --no-audit --no-fund --loglevel=error >&2) && echo "$lock_sum" > "$npm_stamp"
  else
    echo "setup: npm unavailable; the console's charts will be missing" >&2
  fi
fi

stamp="$venv/.trainyard-setup"
want="$(cat pyproject.toml scripts/setup.sh services/api/console/package-lock.json | sha256sum | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi

echo "setup: creating $venv (first time: mmcv may be built from source, ~25 min)" >&2
[ -x "$venv/bin/python" ] || "$py" -m venv "$venv"
pip=("$venv/bin/python" -m pip install --quiet --disable-pip-version-check)

# 1. torch pinned first: anything asking for an unpinned torch pulls CUDA.
#    setuptools < 84 keeps pkg_resources, which mmcv's build needs.
"${pip[@]}" "setuptools==80.9.0" wheel "torch==2.13.0"
# 2. Runtime needs of mmengine/mmcv/mmdet (headless OpenCV, no libGL).
"${pip[@]}" "numpy>=1.26" opencv-python-headless "pycocotools>=2.0.7" scipy shapely \
  terminaltables matplotlib addict yapf termcolor tqdm pyyaml rich packaging pillow six
# 3. mmengine and mmdet without deps: they would pull opencv-python.
"${pip[@]}" --no-deps "mmengine==0.10.7" "mmdet==3.3.0"
# 4. mmcv with CPU ops, built against the installed torch (or the cached wheel).
MMCV_WITH_OPS=1 FORCE_CUDA=0 "${pip[@]}" --no-build-isolation --no-deps "mmcv==2.1.0"
# 5. trainyard itself with its service and dev dependencies.
"${pip[@]}" --no-build-isolation -e ".[dev]"
# 5b. the client distribution (client/: httpx only) with its CLI extra: the `trainyard` command.
"${pip[@]}" --no-build-isolation -e "./client[cli]"

# 6. promtool for the tests' Prometheus checks; without it they skip and say why.
bash scripts/install-promtool.sh "$venv/bin" || echo "setup: promtool unavailable; its checks will be skipped" >&2

"$venv/bin/python" -c "import mmcv.ops, mmdet, mmengine, torch; print('setup: torch', torch.__version__, 'mmcv', mmcv.__version__, 'mmdet', mmdet.__version__)" >&2
echo "$want" > "$stamp"

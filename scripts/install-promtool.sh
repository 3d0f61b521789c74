#!/usr/bin/env bash
# Puts promtool into DEST_DIR (scripts/setup.sh: .venv/bin) when none is on PATH.
# It comes from Debian's `prometheus` package, unpacked rather than installed:
# only the binary is needed, and installing the package would also enable and
# start a Prometheus server. Exit 3 (with the reason on stderr) where it cannot
# be had: no apt, or no package lists and no root to fetch them.
set -euo pipefail
dest="${1:?usage: install-promtool.sh DEST_DIR}"
if command -v promtool >/dev/null 2>&1 || [ -x "$dest/promtool" ]; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1 || ! command -v dpkg-deb >/dev/null 2>&1; then
  echo "promtool: this machine has no apt-get/dpkg-deb to fetch Debian's prometheus package" >&2
  exit 3
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$work"
if ! apt-get download prometheus >download.log 2>&1; then
  if [ "$(id -u)" != 0 ]; then
    echo "promtool: apt-get download prometheus failed and refreshing package lists needs root: $(tail -1 download.log)" >&2
    exit 3
  fi
  apt-get update -qq >/dev/null 2>&1 || true
  if ! apt-get download prometheus >download.log 2>&1; then
    echo "promtool: apt-get download prometheus failed: $(tail -1 download.log)" >&2
    exit 3
  fi
fi
dpkg-deb -x prometheus_*.deb unpacked
mkdir -p "$dest"
install -m 0755 unpacked/usr/bin/promtool "$dest/promtool"
echo "promtool: installed $("$dest/promtool" --version 2>&1 | head -1) into $dest" >&2

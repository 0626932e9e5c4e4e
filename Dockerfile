# keypool gateway image: `docker build -t keypool .` then `docker run --env-file .env -p 8000:8000 keypool`
FROM python:3.11-slim AS base

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /srv/keypool

# Dependencies first, pinned by the same constraints file the tests use, for a cacheable layer.
COPY pyproject.toml constraints.txt README.md ./
COPY app/__init__.py app/__init__.py
RUN pip install -c constraints.txt -e . && rm -rf /root/.cache

COPY app ./app
COPY migrations ./migrations
COPY alembic.ini ./

RUN useradd --system --uid 10001 keypool && mkdir -p /data && chown keypool /data
USER keypool

ENV HOST=0.0.0.0 \
    PORT=8000 \
    AUTH_MODE=token \
    DATABASE_URL=sqlite+aiosqlite:////data/keypool.db \
    STATS_SPOOL_PATH=/data/keypool-spool.jsonl

EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --retries=3 \
    CMD python -c "import urllib.request,os; urllib.request.urlopen(f'http://127.0.0.1:{os.environ.get(\"PORT\",\"8000\")}/healthz', timeout=2)"

CMD ["sh", "-c", "keypool serve --host \"$HOST\" --port \"$PORT\" --workers \"${WEB_CONCURRENCY:-1}\""]

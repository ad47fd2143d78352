# klinetrio's container image: `klinetrio serve` by default, any klinetrio command otherwise.
#
#   docker build -t klinetrio .
#   docker run --rm -p 8080:8080 \
#       -e KLINETRIO_DATABASE_URL=postgresql://user:password@db.example:5432/candles \
#       -e KLINETRIO_SYMBOLS=btcusdt,ethusdt -e KLINETRIO_INTERVALS=1m,1h klinetrio
#   docker run --rm -e KLINETRIO_DATABASE_URL=... klinetrio backfill --symbol BTCUSDT --interval 1h --start 2024-01-01
#
# Point KLINETRIO_DATABASE_URL at a PostgreSQL/TimescaleDB server (docker-compose.yml runs one).
# Without it klinetrio starts its embedded PostgreSQL in /data, as the image's unprivileged user
# (PostgreSQL refuses to run as root): fine for a try-out with a volume on /data, not for
# production, where the database should outlive and be shared beyond one container.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN useradd --system --uid 10001 --user-group --create-home --home-dir /home/klinetrio klinetrio \
    && install -d -o klinetrio -g klinetrio -m 0750 /data

# Only what the wheel needs (see .dockerignore); the source is removed once installed.
COPY pyproject.toml README.md /tmp/klinetrio/
COPY db /tmp/klinetrio/db
COPY klinetrio /tmp/klinetrio/klinetrio
RUN pip install /tmp/klinetrio && rm -rf /tmp/klinetrio

USER klinetrio
WORKDIR /home/klinetrio

ENV KLINETRIO_HTTP_ADDR=0.0.0.0:8080 \
    KLINETRIO_DATA_DIR=/data
EXPOSE 8080
VOLUME ["/data"]

# /ready answers 200 once the database is up and every stream is subscribed, 503 otherwise
# (urlopen raises on 503, so the exit status is non-zero). No curl in the slim image: python.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; port = os.environ.get('KLINETRIO_HTTP_ADDR', '0.0.0.0:8080').rpartition(':')[2]; urllib.request.urlopen(f'http://127.0.0.1:{port}/ready', timeout=4)"]

# SIGTERM (docker stop) is an orderly stop: streams close, the writer commits, exit 0. The drain
# deadline is 8 s; give the container at least 10 s (docker stop's default) to stop.
STOPSIGNAL SIGTERM
ENTRYPOINT ["klinetrio"]
CMD ["serve"]

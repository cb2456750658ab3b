# One image for every service; the SERVICE variable picks which one a container runs:
#   docker run -e SERVICE=exporter -e AMQP_URI=... -e DATABASE_URL=... -e SECRET_KEY=... IMAGE
# The migration is the same image with another command: `python -m tools.cli migrate`.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Dependencies first: this layer is reused until requirements.txt changes.
COPY requirements.txt ./
RUN pip install -r requirements.txt

# Unprivileged user; /data holds everything the services write (VAR_DIR, local storage, scratch files).
RUN useradd --system --uid 10001 --user-group --home-dir /app --no-create-home --shell /usr/sbin/nologin app \
    && mkdir -p /data/storage \
    && chown -R app:app /data

COPY . .

ENV VAR_DIR=/data \
    STORAGE_DIR=/data/storage

USER app

# 8000 gateway, 8001 storage data plane, 9100 Prometheus metrics (METRICS_PORT).
EXPOSE 8000 8001 9100

# exec: nameko is PID 1 and gets SIGTERM directly, so it drains (shared/drain.py via deploy/nameko.yml).
CMD ["sh", "-c", "exec nameko run --config deploy/nameko.yml \"services.${SERVICE:?set SERVICE to api_gateway, exporter, importer, storage, mailer or webhooks}.service\""]

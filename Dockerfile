# logserver: a runnable image. Build: docker build -t logserver .
# Run with a config mounted at /config/logserver.toml (keys beside it) and a data volume:
#   docker run -v $PWD/conf:/config -v logdata:/data -p 8080:8080 \
#     -e LOGSERVER_LISTEN=0.0.0.0:8080 logserver --config /config/logserver.toml
# Without database_url / DATABASE_URL the embedded PostgreSQL keeps its files in data_dir.
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1

WORKDIR /app
# The build's inputs. logserver/migrations and logserver/openapi.yaml are symlinks to the
# top-level files, so those come too; the wheel pip builds holds them as package data.
COPY pyproject.toml README.md LICENSE constraints.txt ./
COPY logserver ./logserver
COPY migrations ./migrations
COPY openapi.yaml ./
# The s3 extra: static publication to S3-compatible storage (docs/deployment.md).
RUN pip install --no-compile -c constraints.txt ".[s3]" \
    && useradd --system --create-home --uid 10001 logserver \
    && mkdir -p /data && chown logserver /data

USER logserver
VOLUME ["/data"]
EXPOSE 8080
ENTRYPOINT ["logserver", "serve"]
CMD ["--config", "/config/logserver.toml"]

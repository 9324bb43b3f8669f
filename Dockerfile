# logserver's container image (docs/deployment.md, "Container image").
#
# The build context is a directory holding `wheels/`: logserver's wheel and its pinned
# dependencies', built on the host, so the build itself downloads nothing.
# `python3 scripts/container.py build` does every step; by hand:
#
#   python3 -m pip wheel -c constraints.txt -w build/container/wheels '.[s3]'
#   docker build --network host -t logserver -f Dockerfile build/container
#
# BASE selects the base image: the official Python image (the default, where a registry
# is reachable) or one made locally from Debian's packages, where none is
# (`--build-arg BASE=logserver-base/debian-python:bookworm-...`, made by scripts/container.py).
# Either must have CPython 3.11 as `python3`, with the venv module: the wheels are
# built for it.
#
# Run, with the config (and the keys it names) mounted at /config and the data in a volume:
#
#   docker run -d --name logserver --network host -v logserver-data:/data \
#     -v "$PWD/conf:/config:ro" -e LOGSERVER_LISTEN=127.0.0.1:8080 logserver
#
# Without database_url / DATABASE_URL the embedded PostgreSQL keeps its files in
# /data/postgres (the config's data_dir must be /data).
ARG BASE=python:3.11-slim-bookworm

FROM ${BASE} AS install
# Marks this stage's images, so that scripts/container.py removes them after a build
# (the classic builder keeps them; they hold the wheels, 40 MB a build).
LABEL org.logserver.build-stage=install
COPY wheels /wheels
# A venv, so the same steps work on Debian's python3 (which refuses system-wide pip
# installs, PEP 668) and on the official image; --no-index: only the wheels given.
# pip and setuptools (which the venv brings) are removed afterwards: nothing in the
# image installs anything.
RUN python3 -m venv /opt/logserver \
    && /opt/logserver/bin/python -m pip install --no-index --find-links /wheels --disable-pip-version-check \
        -q "logserver[s3]" \
    && /opt/logserver/bin/python -m pip uninstall -y -q setuptools pip

FROM ${BASE}
COPY --from=install /opt/logserver /opt/logserver
# A fixed uid, so files in the volume and a mounted config can be given to it from the
# host (chown 10001). The embedded PostgreSQL runs as this user too (as root it would
# create a user of its own).
RUN groupadd --gid 10001 logserver \
    && useradd --uid 10001 --gid 10001 --home-dir /data --no-create-home --shell /usr/sbin/nologin logserver \
    && mkdir -p /data /run/logserver \
    && chown logserver:logserver /data /run/logserver \
    && chmod 0700 /data /run/logserver
ENV PATH=/opt/logserver/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    XDG_RUNTIME_DIR=/run/logserver

USER logserver
WORKDIR /data
VOLUME ["/data"]
EXPOSE 8080
# SIGTERM (docker stop) makes the server finish its requests and exit; give it
# `docker stop -t 30` or more on a busy log.
STOPSIGNAL SIGTERM
ENTRYPOINT ["logserver", "serve"]
CMD ["--config", "/config/logserver.toml"]

# syntax=docker/dockerfile:1
# One image for every qanat service; the command picks the part to run:
#   docker run qanat source http | transform | sink postgres | db init postgres | ...
# Each service serves /healthz, /readyz and /metrics: the HTTP source on its own port
# (8080), the others on their ops port (QANAT_OPS_PORT; 9101 transform, 9102 SQLite sink,
# 9103 PostgreSQL sink, 9104 errors sink). SIGTERM stops a service cleanly (flush, commit,
# exit 0) within QANAT_OPS_SHUTDOWN_TIMEOUT_S (20 s): give it a longer stop grace period.

# --- build: install qanat and its extras into a virtualenv -----------------------------
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/qanat
WORKDIR /src
# The distribution is pyproject.toml + README.md + the three packages (hatch wheel targets).
# Exact versions from constraints.txt, the build backend's included (PIP_CONSTRAINT).
COPY pyproject.toml README.md constraints.txt ./
COPY pipelines ./pipelines
COPY sources ./sources
COPY sinks ./sinks
RUN PIP_CONSTRAINT=/src/constraints.txt /opt/qanat/bin/pip install ".[all]"

# --- runtime: the virtualenv, the schemas, a non-root user ------------------------------
FROM python:3.11-slim
ENV PATH=/opt/qanat/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    QANAT_DATA_DIR=/var/lib/qanat \
    QANAT_TRANSFORM_SCHEMA_DIR=/app/schemas \
    QANAT_LOG_FORMAT=json
RUN groupadd --system --gid 10001 qanat \
    && useradd --system --uid 10001 --gid qanat --home-dir /app --no-create-home \
       --shell /usr/sbin/nologin qanat \
    && mkdir -p /var/lib/qanat \
    && chown qanat:qanat /var/lib/qanat
COPY --from=build /opt/qanat /opt/qanat
WORKDIR /app
COPY schemas/ /app/schemas/
USER qanat
VOLUME ["/var/lib/qanat"]
EXPOSE 8080 9101 9102 9103 9104
STOPSIGNAL SIGTERM
ENTRYPOINT ["qanat"]
CMD ["--help"]

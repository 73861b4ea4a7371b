# Paved operator image: `docker build -t paved:0.1.0 .` (not built in CI: no Docker engine).
# Two stages: wheels are built with the pinned constraints, the runtime stage only installs them.
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml constraints.txt README.md ./
COPY operator/ operator/
RUN pip wheel --wheel-dir /wheels -c constraints.txt .

FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY --from=build /wheels /wheels
COPY constraints.txt /tmp/constraints.txt
RUN pip install --no-index --find-links /wheels -c /tmp/constraints.txt paved \
    && rm -rf /wheels /tmp/constraints.txt \
    && groupadd --system --gid 10001 paved \
    && useradd --system --uid 10001 --gid paved --home-dir /nonexistent --shell /usr/sbin/nologin paved
USER 10001:10001
EXPOSE 8080 8081 9443
ENTRYPOINT ["paved", "run"]

# Two images from one file:
#   docker build --target api   -t softmax-serving:api   .   # lean serving install, no TensorFlow
#   docker build --target train -t softmax-serving:train .   # adds TensorFlow + Keras for training
# Both run as an unprivileged numeric user from /app, where the model repository
# is /app/models (the default relative path "models"). docker-compose.yml wires
# them together through a named volume. The CMDs are the argv lists in
# tests/commands.py; tests/test_containers.py keeps them in sync.

FROM python:3.11.14-slim-bookworm AS python-base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

# ---- builder: the project sources and an empty virtualenv in /opt/venv --------
FROM python-base AS builder
RUN python -m venv /opt/venv
WORKDIR /src
COPY pyproject.toml README.md ./
COPY service/ service/
COPY model_training/ model_training/

# ---- the serving virtualenv: the default (lean) install, no TensorFlow ---------
FROM builder AS api-venv
RUN pip install --no-cache-dir .

# ---- the training virtualenv: the "train" extra (TensorFlow + Keras) -----------
# Spelled "./[train]" (same as ".[train]"): hadolint's DL3013 recognises a local
# project path only with a "./" or "/" prefix.
FROM builder AS train-venv
RUN pip install --no-cache-dir "./[train]"

# ---- common runtime: unprivileged user, /app with the model repository ---------
FROM python-base AS runtime
ENV SERVICE_HOST=0.0.0.0 \
    SERVICE_PORT=8000 \
    SERVICE_GRPC_PORT=8001
# /app/models is created owned by the runtime user, so an empty named volume
# mounted there starts with that ownership and training can write into it.
RUN groupadd --gid 10001 app \
    && useradd --uid 10001 --gid 10001 --no-log-init --create-home \
        --home-dir /home/app --shell /usr/sbin/nologin app \
    && mkdir -p /app/models \
    && chown 10001:10001 /app/models
WORKDIR /app
LABEL org.opencontainers.image.title="softmax-serving" \
      org.opencontainers.image.description="Keras softmax classifier: training and serving" \
      org.opencontainers.image.licenses="Apache-2.0"

# ---- target "train": trains the default model into /app/models and exits -------
FROM runtime AS train
COPY --from=train-venv /opt/venv /opt/venv
USER 10001:10001
CMD ["python", "-m", "model_training", "--if-missing"]

# ---- target "api": serves every model in /app/models on port 8000 (gRPC: 8001) -
FROM runtime AS api
COPY --from=api-venv /opt/venv /opt/venv
USER 10001:10001
EXPOSE 8000 8001
# Ready means the default model is loaded and warmed; the request raises (exit 1)
# on any non-2xx answer or connection failure. No curl in a slim image. Proxies
# are bypassed: Docker may inject HTTP_PROXY, which must not see 127.0.0.1.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request as r; r.build_opener(r.ProxyHandler({})).open('http://127.0.0.1:8000/health/ready', timeout=4).close()"]
CMD ["python", "-m", "service"]

# syntax=docker/dockerfile:1.7
# Image of a Python task service: the `gleitzeit` package (python/) with its
# `gleitzeit-service` command, serving the example module examples/python/tasks.py.
#
#   docker build -f deploy/python.Dockerfile -t gleitzeit-python-tasks:latest .
#
# Your own functions: build FROM this image, COPY your modules into /app and pass their names
# as the command (see docs/operations.md). The shared token comes from the environment
# (GLEITZEIT_SERVICE_TOKEN or GLEITZEIT_SERVICE_TOKEN_FILE), never from the command line.

ARG PYTHON_VERSION=3.12
FROM python:${PYTHON_VERSION}-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN groupadd --system --gid 10001 gleitzeit \
 && useradd --system --uid 10001 --gid gleitzeit --no-create-home \
      --home-dir /nonexistent --shell /usr/sbin/nologin gleitzeit
COPY python/ /tmp/gleitzeit-python/
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install /tmp/gleitzeit-python && rm -rf /tmp/gleitzeit-python
WORKDIR /app
COPY examples/python/tasks.py /app/tasks.py
USER 10001:10001
EXPOSE 8765
# Listen on all interfaces; the URL advertised in Redis uses GLEITZEIT_SERVICE_ADVERTISE
# (set it to an address the workers can reach: the pod IP, the compose service name).
ENTRYPOINT ["gleitzeit-service", "--host", "0.0.0.0", "--port", "8765"]
CMD ["--name", "Python Tasks", "tasks"]

# promptcast serve in a container: every task an HTTP endpoint on port 8000.
#
#   docker build -t promptcast .
#   docker run --rm -p 8000:8000 \
#     -e ANTHROPIC_API_KEY -e PROMPTCAST_API_TOKENS=… \
#     -v "$PWD/prompts:/prompts:ro" -e PROMPTCAST_PROMPTS=/prompts \
#     promptcast
#
# It binds 0.0.0.0, so it refuses to start without PROMPTCAST_API_TOKENS (or --insecure).
# Optionally -e PROMPTCAST_ALLOWED_HOSTS=api.example.com to answer only to that Host name.
# Put TLS and header timeouts in front of it (a reverse proxy or load balancer): uvicorn closes
# idle keep-alive connections after 5 s and takes at most 512 connections per worker, but does not
# time out a client that sends its request head slowly. /docs works offline (bundled assets).
# Not built in CI.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY pyproject.toml README.md ./
COPY promptcast ./promptcast
COPY cassettes/examples ./cassettes/examples
RUN pip install ".[server]" \
    && useradd --system --uid 10001 --no-create-home promptcast \
    && rm -rf /src

WORKDIR /
USER promptcast
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=3s \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"
CMD ["promptcast", "serve", "--host", "0.0.0.0", "--port", "8000"]

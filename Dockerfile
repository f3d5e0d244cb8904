# eg-bridge: the daemon and the EG emulator in one small image.
#   docker build -t eg-bridge .
#   docker run --rm -v $PWD/config:/config:ro eg-bridge run -c /config/rabbitmq.yaml
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY bridge ./bridge
RUN pip install --no-compile . && useradd --system --uid 10001 egbridge
COPY config /config
USER egbridge

# Containers listen on all interfaces; the config's status.listen should say 0.0.0.0:8081.
EXPOSE 8081 8088
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 \
  CMD ["eg-bridge", "health", "--url", "http://127.0.0.1:8081/readyz"]
ENTRYPOINT ["eg-bridge"]
CMD ["run", "-c", "/config/demo.yaml"]

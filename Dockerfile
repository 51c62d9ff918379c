# visitwire: capture agent + processors + dashboard in one image (the embedded runtime).
# Build: docker build -t visitwire .   Run (capture needs the host network and CAP_NET_RAW):
#   docker run --net=host --cap-add=NET_RAW --cap-add=NET_ADMIN visitwire run --iface eth0 --ports 80,443
FROM python:3.11-slim-bookworm

RUN apt-get update \
 && apt-get install -y --no-install-recommends redis-server libpcap0.8 tcpdump \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/visitwire
COPY pyproject.toml README.md ./
COPY capture capture
COPY processors processors
COPY sinks sinks
COPY engine engine
COPY config config
RUN pip install --no-cache-dir . \
 && python -c "import capture, processors, sinks, engine, config"

ENV VISITWIRE_DATA_DIR=/var/lib/visitwire
VOLUME /var/lib/visitwire
EXPOSE 8787
ENTRYPOINT ["visitwire"]
CMD ["run", "--help"]

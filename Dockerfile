# visitwire: one image for every role (capture agent, worker, screen, embedded runtime).
#   docker build -t visitwire .
#   deploy/compose.yaml runs the production stack from it (README, Operations).
# Stage 1 builds the virtual environment, compiles the numba kernels into its cache and capture's ahead of
# time (a capture start then needs no numba), so a container starts without compiling and without write
# access to its own code.
FROM python:3.11-slim-bookworm AS build

ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# gcc/g++: capture's kernels are also built ahead of time into an extension module (capture/aot.py);
# the build stage only, at the base image's Debian versions
# hadolint ignore=DL3008
RUN apt-get update && apt-get install -y --no-install-recommends gcc g++ && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/visitwire
WORKDIR /src
COPY pyproject.toml README.md ./
COPY capture capture
COPY processors processors
COPY sinks sinks
COPY engine engine
COPY config config
RUN /opt/visitwire/bin/pip install .
# the installed package, not /src, must be the one imported (and cached) below
WORKDIR /tmp
RUN /opt/visitwire/bin/python -c "from capture.decoder import warm_up; warm_up()" \
 && VISITWIRE_DATA_DIR=/tmp /opt/visitwire/bin/python -c "from config.settings import load_settings; \
from processors.agents import HitProcessor; HitProcessor(load_settings()).warm_up()" \
 && /opt/visitwire/bin/python -m capture.aot \
 && /opt/visitwire/bin/visitwire --help > /dev/null

# Stage 2: the runtime, without compilers or pip caches; runs as the unprivileged user `visitwire`.
FROM python:3.11-slim-bookworm

# redis-server: only `visitwire run` / `demo` (embedded runtime) start one; libpcap: scapy's pcap I/O.
# Versions follow the base image's Debian release (its security updates included), so no pins here.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends redis-server libpcap0.8 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 visitwire \
 && useradd --system --uid 10001 --gid visitwire --home-dir /var/lib/visitwire --shell /usr/sbin/nologin visitwire \
 && install -d -o visitwire -g visitwire -m 0750 /var/lib/visitwire

COPY --from=build /opt/visitwire /opt/visitwire
ENV PATH=/opt/visitwire/bin:$PATH \
    VISITWIRE_DATA_DIR=/var/lib/visitwire \
    VISITWIRE_CAPTURE__RUN_AS=visitwire \
    PYTHONUNBUFFERED=1
VOLUME /var/lib/visitwire
WORKDIR /var/lib/visitwire
# The capture agent alone is started as root (compose: user: root, cap_add NET_RAW, NET_ADMIN, SETUID,
# SETGID); it opens its socket and continues as `visitwire` (capture.run_as). Everything else runs as:
USER 10001:10001
EXPOSE 8787 9187
ENTRYPOINT ["visitwire"]
CMD ["--help"]

# AIRClass node image: `airclass serve` for any role (standalone, main, sub).
# Build: docker build -t airclass .        (add --build-arg WITH_FFMPEG=0 to skip ffmpeg)
FROM python:3.11-slim-bookworm

# Debian ffmpeg (5.1) is optional: a publisher for demos/tests and ffprobe for recordings.
# The node itself decodes/encodes with the FFmpeg bundled in the PyAV wheel.
ARG WITH_FFMPEG=1
RUN if [ "$WITH_FFMPEG" = "1" ]; then \
        apt-get update \
        && apt-get install -y --no-install-recommends ffmpeg \
        && rm -rf /var/lib/apt/lists/*; \
    fi

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    AIRCLASS_DATA_DIR=/data

WORKDIR /app
COPY . /app
# The node runs as an unprivileged user (uid 10001) that owns only /data.
RUN pip install -e . \
    && groupadd --system --gid 10001 airclass \
    && useradd --system --uid 10001 --gid airclass --home-dir /data --shell /usr/sbin/nologin airclass \
    && mkdir -p /data && chown airclass:airclass /data

USER airclass:airclass
VOLUME ["/data"]
# HTTP (pages, API, WHEP, relay), RTMP ingest. WebRTC media uses the UDP range given
# by --udp-ports; see docker-compose.yml.
EXPOSE 8000 1935
ENTRYPOINT ["airclass"]
CMD ["serve"]

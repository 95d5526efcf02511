# context7-lb: multi-stage build, small non-root runtime image.
#   docker build -t context7-lb .
#   docker run -p 8002:8002 -e RUNPOD_API_KEY=... -e RUNPOD_VLLM_ENDPOINT_ID=... context7-lb
#   docker run -p 8002:8002 -v $PWD/config:/etc/context7-lb context7-lb --config /etc/context7-lb/example.yaml

FROM rust:1.95-slim-bookworm AS build
# cmake builds Pingora's zlib-ng; a C compiler builds ring.
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake build-essential \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
RUN cargo build --profile dist --locked --bin context7-lb \
 && strip target/dist/context7-lb

FROM debian:bookworm-slim
# CA certificates: upstreams are reached over TLS with verified certificates.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home context7
COPY --from=build /src/target/dist/context7-lb /usr/local/bin/context7-lb
COPY config /etc/context7-lb
USER 10001
ENV PORT=8002
EXPOSE 8002
# No curl in the image: bash's /dev/tcp asks /ping (on PORT_HEALTH when set,
# as RunPod's load balancer does) and expects a 200.
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/${PORT_HEALTH:-$PORT} && printf 'GET /ping HTTP/1.0\\r\\n\\r\\n' >&3 && head -n1 <&3 | grep -q ' 200 '"]
ENTRYPOINT ["/usr/local/bin/context7-lb"]

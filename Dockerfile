# berth's container image.
#
#   docker build -t berth:0.1.0 .
#   docker run -d --name berth -p 8888:8888 -v berth-data:/var/lib/berth berth:0.1.0
#
# deploy/README.md covers configuration, Kubernetes and systemd. Build
# arguments:
#   RUST_IMAGE   the toolchain that compiles berth
#   BASE_IMAGE   the runtime base; berth needs only glibc (and libgcc_s)
#   BINARY_FROM  the stage or image whose /berth is shipped: `build` compiles
#                it here; an image holding a berth binary built elsewhere
#                (for the same glibc) skips compiling. With BuildKit an
#                unused stage is not built.

ARG RUST_IMAGE=rust:1.95-slim-bookworm
ARG BASE_IMAGE=debian:bookworm-slim
ARG BINARY_FROM=build

FROM ${RUST_IMAGE} AS build
WORKDIR /src
COPY . .
# The `dist` profile (Cargo.toml): whole-program optimisation, and no
# debug information (the line tables a local release build keeps for
# profiling are most of its size); symbols stay, so a panic's backtrace
# still names functions. The script lays the code out so that what a
# serving berth runs sits together (less of the binary mapped in memory).
RUN scripts/build-dist.sh --locked \
    && cp target/dist/berth /berth

FROM ${BINARY_FROM} AS binary

FROM ${BASE_IMAGE}
# A fixed uid, so that volumes and Kubernetes' runAsUser/fsGroup can name it.
ARG BERTH_UID=10001
RUN groupadd --system --gid "${BERTH_UID}" berth \
    && useradd --system --uid "${BERTH_UID}" --gid berth \
        --home-dir /var/lib/berth --no-create-home --shell /usr/sbin/nologin berth \
    && install -d -o berth -g berth -m 0700 /var/lib/berth \
    && install -d -m 0755 /etc/berth
# The repository's config.toml (every key with its default), with the data
# kept in the volume. Mount another file here, or set BERTH_CONFIG, to
# change it; BERTH_LISTEN and BERTH_DATA_DIR override it.
COPY config.toml /etc/berth/config.toml
RUN sed -i 's|^data_dir = .*|data_dir = "/var/lib/berth"|' /etc/berth/config.toml \
    && grep -qx 'data_dir = "/var/lib/berth"' /etc/berth/config.toml
COPY --from=binary /berth /usr/local/bin/berth

ENV BERTH_CONFIG=/etc/berth/config.toml
USER berth
WORKDIR /var/lib/berth
VOLUME ["/var/lib/berth"]
EXPOSE 8888
# `berth healthcheck` asks /healthz on the address berth serves (from the
# config or BERTH_LISTEN), so the image needs no curl.
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 \
    CMD ["berth", "healthcheck"]
ENTRYPOINT ["berth"]
CMD ["serve"]

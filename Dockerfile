# syntax=docker/dockerfile:1
# Operator image: release build in a Rust image, then only the binary on a distroless runtime
# (glibc + libgcc, no shell, no package manager), running as the non-root user 65532.
#   docker build -t quay.io/openshift_sandboxed_containers/sandboxed-containers-operator-rs:v0.1.0 .
ARG RUST_VERSION=1.95

FROM docker.io/library/rust:${RUST_VERSION}-slim-bookworm AS build
WORKDIR /src
# Dependencies first: this layer is rebuilt only when a Cargo.toml or Cargo.lock changes.
# testkit/ is the workspace's test-only crate: Cargo loads every workspace member (and the root's
# dev-dependency on it) before building anything, so its manifest must be here, but `--bin`
# never compiles it, so an empty lib stands in for its sources (.dockerignore keeps them out).
# Its manifest is the real one, so Cargo.lock still matches and `--locked` holds.
COPY Cargo.toml Cargo.lock ./
COPY testkit/Cargo.toml testkit/
RUN mkdir -p src testkit/src \
 && echo 'fn main() {}' > src/main.rs \
 && touch src/lib.rs testkit/src/lib.rs \
 && cargo build --release --locked --bin sandboxed-containers-operator \
 && rm -rf src
COPY src ./src
RUN touch src/main.rs src/lib.rs \
 && cargo build --release --locked --bin sandboxed-containers-operator \
 && cp target/release/sandboxed-containers-operator /sandboxed-containers-operator

FROM gcr.io/distroless/cc-debian12:nonroot
ARG VERSION=0.1.0
LABEL name="sandboxed-containers-operator-rs" \
      vendor="Red Hat" \
      version="${VERSION}" \
      release="1" \
      summary="OpenShift sandboxed containers operator (Rust)" \
      description="Installs and governs Kata Containers (sandboxed containers) on OpenShift and Kubernetes." \
      io.k8s.display-name="OpenShift sandboxed containers operator (Rust)" \
      io.k8s.description="Installs and governs Kata Containers (sandboxed containers) on OpenShift and Kubernetes." \
      io.openshift.tags="kata,sandboxed-containers,operator" \
      org.opencontainers.image.title="sandboxed-containers-operator-rs" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.source="https://github.com/openshift/sandboxed-containers-operator-rs" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /sandboxed-containers-operator /usr/local/bin/sandboxed-containers-operator
# Numeric user so `runAsNonRoot: true` can be verified by the kubelet.
USER 65532:65532
EXPOSE 9443 8443 8081
ENTRYPOINT ["/usr/local/bin/sandboxed-containers-operator"]
CMD ["run"]

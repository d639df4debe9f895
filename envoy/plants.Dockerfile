# The plants demo app (examples/plants.rs), for envoy/docker-compose.yaml.
FROM rust:1.85-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY examples ./examples
# A workspace member and dev-dependency (examples build with dev-dependencies).
COPY tests/harness ./tests/harness
COPY envoy/dbfault.yaml ./envoy/dbfault.yaml
RUN cargo build --release --example plants

FROM debian:bookworm-slim
COPY --from=build /src/target/release/examples/plants /usr/local/bin/plants
CMD ["plants"]

# The Istio-loadable image of dbfault (`make image`; `make oci` builds the same without Docker):
# one layer holding the module as /plugin.wasm, the format Istio's agent extracts.
FROM scratch
COPY target/wasm32-wasip1/release/dbfault.wasm ./plugin.wasm

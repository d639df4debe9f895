#!/usr/bin/env python3
"""Build dbfault's Istio-loadable image as an OCI image layout, without Docker.

  build-oci.py --wasm target/wasm32-wasip1/release/dbfault.wasm --out target/oci --tag 0.1.0

The image is what `docker build` makes of `FROM scratch` + `COPY dbfault.wasm ./plugin.wasm`:
one gzip-compressed tar layer holding `plugin.wasm` (the "compat" Wasm image format Istio's
agent accepts: exactly one layer of media type application/vnd.oci.image.layer.v1.tar+gzip,
containing a file named plugin.wasm). The output is byte-for-byte reproducible (fixed mtimes,
owners and gzip header), so the digest depends only on the module.

It prints the push command and the two WasmPlugin fields that pin the image (--image names the
repository it will be pushed to). The pin is the image manifest's digest: for an `oci://` URL,
Istio's agent compares `spec.sha256` with the digest of the manifest it fetched (pkg/wasm's
ImageFetcher returns it and the cache refuses a mismatch), and a URL ending in `@sha256:` fetches
that manifest and no other. `skopeo copy --preserve-digests` refuses to push the image in any
form but this exact manifest, so the digest printed here is the one the registry serves.
"""
import argparse
import gzip
import hashlib
import io
import json
import os
import tarfile

MANIFEST = "application/vnd.oci.image.manifest.v1+json"
CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"


def blob(out, data):
    digest = hashlib.sha256(data).hexdigest()
    path = os.path.join(out, "blobs", "sha256", digest)
    with open(path, "wb") as f:
        f.write(data)
    return f"sha256:{digest}", len(data)


def repository(image):
    """`registry:5000/team/dbfault:0.1.0` → `registry:5000/team/dbfault` (a digest goes too)."""
    name = image.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    return name[: len(name) - len(last)] + last.split(":", 1)[0]


def layer_tar(wasm):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("plugin.wasm")
        info.size = len(wasm)
        info.mode = 0o644
        info.mtime = 0
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        tar.addfile(info, io.BytesIO(wasm))
    return buf.getvalue()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--wasm", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--tag", default="latest")
    parser.add_argument("--image", help="where it will be pushed, REPOSITORY[:TAG] "
                        "(default registry.example.com/dbfault:TAG, a placeholder)")
    opts = parser.parse_args()

    with open(opts.wasm, "rb") as f:
        wasm = f.read()
    if not wasm.startswith(b"\0asm"):
        raise SystemExit(f"{opts.wasm} is not a Wasm module")
    os.makedirs(os.path.join(opts.out, "blobs", "sha256"), exist_ok=True)

    tar = layer_tar(wasm)
    gz = io.BytesIO()
    with gzip.GzipFile(fileobj=gz, mode="wb", mtime=0, filename="") as z:
        z.write(tar)
    layer_digest, layer_size = blob(opts.out, gz.getvalue())

    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(tar).hexdigest()]},
        "history": [{"created_by": "COPY dbfault.wasm ./plugin.wasm"}],
    }
    config_digest, config_size = blob(opts.out, json.dumps(config, sort_keys=True).encode())

    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "config": {"mediaType": CONFIG, "digest": config_digest, "size": config_size},
        "layers": [{"mediaType": LAYER, "digest": layer_digest, "size": layer_size}],
    }
    manifest_digest, manifest_size = blob(opts.out, json.dumps(manifest, sort_keys=True).encode())

    index_path = os.path.join(opts.out, "index.json")
    entries = []
    if os.path.exists(index_path):
        with open(index_path) as f:
            entries = [
                m for m in json.load(f).get("manifests", [])
                if m.get("annotations", {}).get("org.opencontainers.image.ref.name") != opts.tag
            ]
    entries.append({
        "mediaType": MANIFEST,
        "digest": manifest_digest,
        "size": manifest_size,
        "annotations": {"org.opencontainers.image.ref.name": opts.tag},
    })
    with open(index_path, "w") as f:
        json.dump({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                   "manifests": entries}, f, indent=2)
    with open(os.path.join(opts.out, "oci-layout"), "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)
    print(f"oci:{opts.out}:{opts.tag} {manifest_digest} (plugin.wasm {len(wasm)} bytes)")
    image = opts.image or f"registry.example.com/dbfault:{opts.tag}"
    print(f"push: skopeo copy --preserve-digests oci:{opts.out}:{opts.tag} docker://{image}")
    print("pin, in the WasmPlugin's spec (examples/istio-overlay/kustomization.yaml):")
    print(f"  url: oci://{repository(image)}@{manifest_digest}")
    print(f'  sha256: "{manifest_digest.removeprefix("sha256:")}"')


if __name__ == "__main__":
    main()

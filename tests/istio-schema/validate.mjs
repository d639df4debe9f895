// Validates Kubernetes manifests against the Istio CRD schemas of @kubernetes-models/istio.
//
//   node tests/istio-schema/validate.mjs istio/wasmplugin.yaml examples/istio-overlay/*.yaml ...
//
// Every document is checked twice:
// 1. with the package's validator compiled from the CRD's OpenAPI schema (types, enums, required
//    fields, patterns);
// 2. with TypeScript's excess-property check against the package's types generated from the same
//    schema. The CRD schemas do not forbid unknown fields (the API server prunes them silently, or
//    refuses them with `kubectl apply --validate=strict`), so a misspelled field such as `selectr`
//    passes step 1 and is caught here.
// Exit status 1 and one line per problem (file, document, field) when anything is wrong.
import { execFileSync } from "node:child_process";
import { readFileSync, writeFileSync, rmSync } from "node:fs";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import { parseAllDocuments } from "yaml";

const here = dirname(fileURLToPath(import.meta.url));
const pkg = "@kubernetes-models/istio";
// apiVersion/kind → module (relative to the package) and its exported class / interface.
const kinds = {
  "extensions.istio.io/v1alpha1/WasmPlugin": "extensions.istio.io/v1alpha1/WasmPlugin",
  "networking.istio.io/v1/ServiceEntry": "networking.istio.io/v1/ServiceEntry",
  "networking.istio.io/v1beta1/ServiceEntry": "networking.istio.io/v1beta1/ServiceEntry",
};

const problems = [];
const docs = [];
for (const file of process.argv.slice(2)) {
  const name = relative(process.cwd(), file);
  parseAllDocuments(readFileSync(file, "utf8")).forEach((doc, i) => {
    const where = `${name} (document ${i + 1})`;
    if (doc.errors.length > 0) {
      problems.push(`${where}: YAML: ${doc.errors[0].message}`);
      return;
    }
    const obj = doc.toJS();
    if (obj === null) return;
    const key = `${obj.apiVersion}/${obj.kind}`;
    if (!kinds[key]) {
      problems.push(`${where}: no Istio schema for ${key}`);
      return;
    }
    docs.push({ where, obj, module: kinds[key], kind: obj.kind });
  });
}

// 1. The CRD schema validator.
for (const d of docs) {
  const mod = await import(`${pkg}/${d.module}`);
  try {
    new mod[d.kind](d.obj).validate();
  } catch (err) {
    const details = (err.errors ?? []).map((e) => `${e.instancePath || "/"} ${e.message}`);
    problems.push(`${d.where}: ${details.length ? details.join("; ") : err.message}`);
  }
}

// 2. Unknown fields, through TypeScript's excess-property check.
const lines = [];
const ranges = [];
docs.forEach((d, i) => {
  lines.push(`import type { I${d.kind} as T${i} } from "${pkg}/${d.module}";`);
});
docs.forEach((d, i) => {
  const text = JSON.stringify(d.obj, null, 2);
  const start = lines.length + 1;
  lines.push(`export const doc${i}: T${i} = ${text};`);
  ranges.push({ start, end: start + text.split("\n").length - 1, where: d.where });
});
const check = join(here, `.check-${process.pid}.ts`);
writeFileSync(check, lines.join("\n") + "\n");
try {
  execFileSync(
    process.execPath,
    [join(here, "node_modules/typescript/bin/tsc"), "--noEmit", "--strict", "--skipLibCheck",
      "--module", "nodenext", "--moduleResolution", "nodenext", "--target", "es2022", check],
    { cwd: here, encoding: "utf8", stdio: "pipe" },
  );
} catch (err) {
  for (const line of String(err.stdout).split("\n")) {
    const m = line.match(/\.ts\((\d+),\d+\): error TS\d+: (.*)$/);
    if (!m) continue;
    const at = Number(m[1]);
    const doc = ranges.find((r) => at >= r.start && at <= r.end);
    problems.push(`${doc ? doc.where : "?"}: ${m[2]}`);
  }
  if (problems.length === 0) problems.push(`tsc failed: ${err.stdout || err.message}`);
} finally {
  rmSync(check, { force: true });
}

if (problems.length > 0) {
  for (const p of problems) console.log(`invalid: ${p}`);
  process.exit(1);
}
console.log(`valid: ${docs.length} document(s) checked against ${pkg} (strict)`);

// Validates Kubernetes objects against the API's OpenAPI schemas as compiled by the
// kubernetes-models package (ajv validators, no network). Usage:
//   node validate_k8s.js SCHEMA_DIR < objects.json
// SCHEMA_DIR holds node_modules/kubernetes-models (tools/setup.sh installs it there);
// objects.json is a JSON array of objects. Prints one line per object and exits 1 when any
// object is invalid or of a kind the package does not know.
"use strict";
const fs = require("fs");

const schemaDir = process.argv[2];
const objects = JSON.parse(fs.readFileSync(0, "utf8"));
let failures = 0;
for (const object of objects) {
  const name = `${object.kind}/${object.metadata && object.metadata.name}`;
  // apps/v1 -> kubernetes-models/apps/v1/Deployment; v1 -> kubernetes-models/v1/Service
  const modulePath = `kubernetes-models/${object.apiVersion}/${object.kind}`;
  let model;
  try {
    model = require(require.resolve(modulePath, { paths: [schemaDir] }))[object.kind];
  } catch (error) {
    console.log(`FAIL ${name}: no schema for ${object.apiVersion} ${object.kind} (${error.code || error.message})`);
    failures++;
    continue;
  }
  try {
    new model(object).validate();
    console.log(`ok   ${name} (${object.apiVersion})`);
  } catch (error) {
    console.log(`FAIL ${name}: ${error.message}`);
    failures++;
  }
}
process.exit(failures ? 1 : 0);

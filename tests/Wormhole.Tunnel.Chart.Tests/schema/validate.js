#!/usr/bin/env node
// Reads multi-document YAML (e.g. `helm template` output) on stdin and validates every document against the
// Kubernetes schemas of kubernetes-models: `new Kind(doc).validate()`. Prints one line per invalid document
// ("<index> <Kind>/<name>: <reason>") and exits 1 if any is invalid; prints "<n> documents valid" otherwise.
"use strict";
const yaml = require("js-yaml");

function modelFor(apiVersion, kind) {
  // kubernetes-models lays its classes out by apiVersion: kubernetes-models/v1, kubernetes-models/apps/v1, ...
  if (typeof apiVersion !== "string" || !/^[a-z0-9.-]*\/?v[0-9a-z]+$/.test(apiVersion)) {
    return null;
  }
  try {
    return require(`kubernetes-models/${apiVersion}`)[kind] || null;
  } catch {
    return null;
  }
}

function main(text) {
  const docs = yaml.loadAll(text).filter((d) => d !== null && d !== undefined);
  const problems = [];
  docs.forEach((doc, index) => {
    const label = `${index} ${doc && doc.kind}/${doc && doc.metadata && doc.metadata.name}`;
    if (typeof doc !== "object" || Array.isArray(doc)) {
      problems.push(`${label}: not a YAML mapping`);
      return;
    }
    const Model = modelFor(doc.apiVersion, doc.kind);
    if (!Model) {
      problems.push(`${label}: unknown apiVersion/kind ${doc.apiVersion} ${doc.kind}`);
      return;
    }
    try {
      new Model(doc).validate();
    } catch (e) {
      problems.push(`${label}: ${String(e.message).replace(/\s+/g, " ")}`);
    }
  });
  for (const p of problems) {
    console.log(p);
  }
  if (problems.length > 0) {
    process.exit(1);
  }
  console.log(`${docs.length} documents valid`);
}

let input = "";
process.stdin.setEncoding("utf8");
process.stdin.on("data", (chunk) => (input += chunk));
process.stdin.on("end", () => {
  try {
    main(input);
  } catch (e) {
    console.log(`input: ${String(e.message).replace(/\s+/g, " ")}`);
    process.exit(1);
  }
});

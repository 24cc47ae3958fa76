"""Regenerate tests/deploy/schemas/kubernetes-strict.json from the kubernetes-validate wheel (offline).

The file holds the Kubernetes OpenAPI schemas (as JSON Schema, "strict": unknown fields are errors) of
one release for the kinds k8s/ uses, with only the definitions they reach. Its source is PyPI's
kubernetes-validate (which generates them from Kubernetes' own OpenAPI document)::

    pip download --no-deps kubernetes-validate==1.37.0 && unzip kubernetes_validate-*.whl -d kv
    python -m tests.deploy.vendor_k8s_schema kv/kubernetes_validate/kubernetes-json-schema/v1.37.0-local-strict
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent / "schemas" / "kubernetes-strict.json"
KINDS = [("v1", "Namespace"), ("v1", "ConfigMap"), ("v1", "Secret"), ("v1", "Service"), ("apps/v1", "StatefulSet"),
         ("apps/v1", "Deployment"), ("policy/v1", "PodDisruptionBudget"), ("networking.k8s.io/v1", "NetworkPolicy")]
# Custom resources embed this one (a RayService's pod templates).
EXTRA_DEFS = ["io.k8s.api.core.v1.PodTemplateSpec"]
_REF = "/api/_definitions.json#/$defs/"


def _refs(node: Any) -> set[str]:
    found: set[str] = set()
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "$ref" and isinstance(v, str):
                found.add(v.rsplit("/", 1)[-1])
            else:
                found |= _refs(v)
    elif isinstance(node, list):
        for v in node:
            found |= _refs(v)
    return found


def main(schema_dir: str) -> int:
    src = Path(schema_dir)
    version = re.search(r"v(\d+\.\d+\.\d+)", str(src))
    all_defs: dict[str, Any] = json.loads((src / "_definitions.json").read_text())["$defs"]
    kinds: dict[str, Any] = {}
    for api_version, kind in KINDS:
        group_version = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
        text = (src / f"{kind.lower()}-{group_version}.json").read_text().replace(_REF, "#/$defs/")
        kinds[f"{api_version}/{kind}"] = json.loads(text)
    todo = set(EXTRA_DEFS) | _refs(kinds)
    defs: dict[str, Any] = {}
    while todo:
        name = todo.pop()
        if name not in defs:
            defs[name] = all_defs[name]
            todo |= _refs(all_defs[name]) - set(defs)
    doc = {"source": f"PyPI kubernetes-validate, {src.name}", "kubernetes": version.group(1) if version else "?",
           "kinds": kinds, "$defs": dict(sorted(defs.items()))}
    OUT.write_text(json.dumps(doc, indent=None, separators=(",", ":"), sort_keys=False) + "\n")
    print(f"wrote {OUT} ({len(kinds)} kinds, {len(defs)} definitions)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))

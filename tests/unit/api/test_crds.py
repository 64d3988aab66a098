"""The generated CRDs are structural, documented, and what is committed in crds/."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from thrifty.api import crdgen, crds, schema

REPO_ROOT = Path(__file__).resolve().parents[3]


def open_api(kind: crds.Kind) -> Mapping[str, Any]:
    version = crds.crd(kind)["spec"]["versions"][0]
    return version["schema"]["openAPIV3Schema"]  # type: ignore[no-any-return]


@pytest.mark.parametrize("kind", crds.KINDS, ids=lambda k: k.kind)
def test_every_field_has_a_description(kind: crds.Kind) -> None:
    missing = [
        path
        for path, node in schema.walk(open_api(kind))
        if path not in ("", ".metadata")
        and not path.endswith(("[]", "{}"))
        and not node.get("description")
    ]
    assert missing == []


@pytest.mark.parametrize("kind", crds.KINDS, ids=lambda k: k.kind)
def test_schema_is_structural(kind: crds.Kind) -> None:
    for path, node in schema.walk(open_api(kind)):
        assert "$ref" not in node, path
        assert "anyOf" not in node and "oneOf" not in node, path
        assert node.get("type") in {"object", "array", "string", "integer", "number", "boolean"}, (
            path
        )
        if "properties" in node:
            assert "additionalProperties" not in node, path
        for bound in ("exclusiveMinimum", "exclusiveMaximum"):
            assert node.get(bound, True) is True, path
        assert node.get("default", "") is not None, path


def test_model_service_has_the_scale_subresource_and_documented_columns() -> None:
    version = crds.crd(crds.MODEL_SERVICE)["spec"]["versions"][0]
    assert version["subresources"]["scale"]["specReplicasPath"] == ".spec.replicas"
    assert version["subresources"]["scale"]["labelSelectorPath"] == ".status.selector"
    columns = {c["name"] for c in version["additionalPrinterColumns"]}
    assert {"Pools", "Ready", "Desired", "Queue", "$/Hour", "$/1M Tokens", "Age"} <= columns
    props = version["schema"]["openAPIV3Schema"]["properties"]
    assert "replicas" not in props["spec"].get("required", [])
    policy_state = props["status"]["properties"]["autoscaler"]["properties"]["policyState"]
    assert policy_state["x-kubernetes-preserve-unknown-fields"] is True


def test_cel_rules_reference_defaulted_fields_only_under_defaulted_parents() -> None:
    spec = open_api(crds.MODEL_SERVICE)["properties"]["spec"]
    # Spelled out: the API server checks CEL rules against a default before nested defaulting.
    assert spec["properties"]["scaling"]["default"]["minReplicas"] == 1
    assert spec["properties"]["engine"]["default"]["extraArgs"] == []
    assert spec["properties"]["engine"]["properties"]["extraArgs"]["default"] == []
    rules = [r["rule"] for r in spec["x-kubernetes-validations"]]
    assert any("self.scaling.minReplicas" in r for r in rules)


def test_committed_crds_are_current(tmp_path: Path) -> None:
    assert crdgen.main(["--out", str(REPO_ROOT / "crds"), "--check"]) == 0


def test_check_mode_fails_on_stale_files_and_write_mode_fixes_them(tmp_path: Path) -> None:
    assert crdgen.main(["--out", str(tmp_path), "--check"]) == 1
    assert crdgen.main(["--out", str(tmp_path)]) == 0
    assert crdgen.main(["--out", str(tmp_path), "--check"]) == 0
    written = yaml.safe_load((tmp_path / "thrifty.dev_gpupools.yaml").read_text())
    assert written["spec"]["scope"] == "Cluster"
    assert written["spec"]["names"]["categories"] == ["thrifty"]

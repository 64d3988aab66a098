"""What a release is made of agrees with itself: one version in the package, the chart and
`thrifty --version`; the chart's default image is where the release workflow pushes it; the locks
pin every dependency with hashes and keep matplotlib out of the operator's; the image installs from
its lock and runs as non-root; `make lint`/`make unit` need only the virtual environment; the
chart's CRDs are the generated ones."""

from __future__ import annotations

import importlib.metadata
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement

import thrifty

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "thrifty"
WORKFLOW = ROOT / ".github" / "workflows" / "release.yml"


def chart() -> dict[str, str]:
    loaded: dict[str, str] = yaml.safe_load((CHART / "Chart.yaml").read_text())
    return loaded


def test_chart_app_version_package_version_and_cli_agree() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "thrifty", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert result.stdout.strip() == f"thrifty {thrifty.__version__}"
    assert importlib.metadata.version("thrifty") == thrifty.__version__
    assert chart()["appVersion"] == thrifty.__version__
    assert chart()["version"] == thrifty.__version__


def test_the_release_stamps_one_version_everywhere(tmp_path: Path) -> None:
    for relative in ("operator/thrifty/__init__.py", "charts/thrifty/Chart.yaml"):
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / relative, tmp_path / relative)
    shutil.copy(CHART / "values.yaml", tmp_path / "charts/thrifty/values.yaml")
    script = ROOT / "scripts" / "set_version.py"
    image = "ghcr.io/someone/thrifty-operator"
    argv = [sys.executable, str(script), "2.3.4-rc.1", "--image", image, "--root", str(tmp_path)]
    subprocess.run(argv, check=True, timeout=60)
    init = (tmp_path / "operator/thrifty/__init__.py").read_text()
    assert '__version__ = "2.3.4-rc.1"' in init
    stamped = yaml.safe_load((tmp_path / "charts/thrifty/Chart.yaml").read_text())
    assert (stamped["version"], stamped["appVersion"]) == ("2.3.4-rc.1", "2.3.4-rc.1")
    values = yaml.safe_load((tmp_path / "charts/thrifty/values.yaml").read_text())
    assert values["image"] == yaml.safe_load((CHART / "values.yaml").read_text())["image"] | {
        "repository": image
    }
    bad = subprocess.run(
        [sys.executable, str(script), "v1.0", "--root", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert bad.returncode == 2 and "not a semantic version" in bad.stderr


def test_the_charts_default_image_is_where_the_release_pushes_it() -> None:
    workflow = WORKFLOW.read_text()
    pushed = re.search(r'echo "image=ghcr\.io/\$\{owner\}/([a-z-]+)"', workflow)
    assert pushed, "the workflow names its image ghcr.io/<owner>/<name>"
    image = yaml.safe_load((CHART / "values.yaml").read_text())["image"]
    assert re.fullmatch(rf"ghcr\.io/[a-z0-9-]+/{pushed.group(1)}", image["repository"])
    assert image["tag"] == ""  # the chart's appVersion, which the release stamps
    steps = yaml.safe_load(workflow)["jobs"]["release"]["steps"]
    build = next(s for s in steps if str(s.get("uses", "")).startswith("docker/build-push"))
    assert build["with"]["platforms"] == "linux/amd64,linux/arm64"
    assert build["with"]["push"] is True
    loaded = yaml.safe_load(workflow)
    triggers = loaded.get(True) or loaded["on"]  # YAML 1.1 reads the key `on` as true
    assert triggers["push"]["tags"] == ["v[0-9]+.[0-9]+.[0-9]+*"]


def pins(lock: str) -> dict[str, str]:
    text = (ROOT / "requirements" / lock).read_text()
    found = dict(re.findall(r"^([A-Za-z0-9_.-]+)==(\S+) \\$", text, re.MULTILINE))
    blocks = re.split(r"\n(?=[A-Za-z0-9_.-]+==)", text)
    for block in blocks[1:]:
        assert "--hash=sha256:" in block, f"{lock}: no hash for {block.splitlines()[0]}"
    return {re.sub(r"[-_.]+", "-", name).lower(): version for name, version in found.items()}


@pytest.mark.parametrize(("lock", "extras"), [("operator.txt", ()), ("dev.txt", ("dev", "plot"))])
def test_every_declared_dependency_is_pinned_in_its_lock(
    lock: str, extras: tuple[str, ...]
) -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = list(project["dependencies"])
    for extra in extras:
        declared += project["optional-dependencies"][extra]
    pinned = pins(lock)
    for line in declared:
        requirement = Requirement(line)
        name = re.sub(r"[-_.]+", "-", requirement.name).lower()
        assert name in pinned, f"{name} is declared but not in requirements/{lock}: make lock"
        assert requirement.specifier.contains(pinned[name], prereleases=True), (
            f"requirements/{lock} pins {name}=={pinned[name]}, pyproject wants {requirement}"
        )


def test_the_operator_lock_has_no_plotting_and_agrees_with_the_dev_lock() -> None:
    operator, dev = pins("operator.txt"), pins("dev.txt")
    assert "matplotlib" not in operator
    assert "matplotlib" in dev
    assert {name: dev.get(name) for name in operator} == operator


def test_the_image_installs_from_the_lock_and_runs_as_non_root() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "--require-hashes -r requirements/operator.txt" in dockerfile
    assert "--no-deps" in dockerfile
    users = re.findall(r"^USER (\S+)", dockerfile, re.MULTILINE)
    assert users and users[-1].split(":")[0] not in ("0", "root")
    admitted = (ROOT / ".dockerignore").read_text().splitlines()
    assert "!requirements/operator.txt" in admitted and "!requirements/build.txt" in admitted


def test_lint_and_unit_need_only_the_virtual_environment() -> None:
    makefile = (ROOT / "Makefile").read_text()
    for target in ("lint", "unit", "generate"):
        prerequisites = re.search(rf"^{target}:(.*)$", makefile, re.MULTILINE)
        assert prerequisites, target
        assert prerequisites.group(1).split() == ["venv"], target
    assert re.search(r"^venv:\n\tbash scripts/bootstrap.sh venv$", makefile, re.MULTILINE)


def test_the_charts_crds_are_the_generated_ones() -> None:
    generated = sorted(p.name for p in (ROOT / "crds").glob("*.yaml"))
    assert generated == sorted(p.name for p in (CHART / "crds").glob("*.yaml"))
    for name in generated:
        assert (CHART / "crds" / name).read_text() == (ROOT / "crds" / name).read_text(), (
            f"charts/thrifty/crds/{name} differs from crds/{name}: run make generate"
        )

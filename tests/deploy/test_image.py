"""The image's Python payload, without Docker: build the wheel from exactly what the Dockerfile's
builder stage copies, the way it builds it, and check what the image will run is in it.

This catches what a Dockerfile parse cannot: a package missing from pyproject's package list, a
console script pointing nowhere, a source folder the Dockerfile forgets to copy or .dockerignore
leaves out. Pinned dependencies are checked against pyproject's ranges.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
import zipfile

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from deploy.kubectl import REPO

PACKAGE_ROOTS = ("api", "node-agent", "operator", "cli")


def builder_copies() -> list[str]:
    """The sources of the builder stage's COPY instructions (not COPY --from)."""
    stages = re.split(r"^FROM ", (REPO / "Dockerfile").read_text(), flags=re.M)
    [builder] = [s for s in stages if s.split("\n", 1)[0].rstrip().endswith(" AS builder")]
    sources: list[str] = []
    for line in builder.splitlines():
        parts = line.split()
        if parts[:1] == ["COPY"] and not parts[1].startswith("--"):
            sources += [p.rstrip("/") for p in parts[1:-1]]
    return sources


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    context = tmp_path_factory.mktemp("context")
    for source in builder_copies():
        path = REPO / source
        if path.is_dir():
            shutil.copytree(path, context / source,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.tmp"))
        else:
            shutil.copy2(path, context / source)
    out = context / "wheels"
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(context)],
        capture_output=True, text=True, timeout=240,
    )
    assert done.returncode == 0, f"the image's `pip wheel` fails:\n{done.stderr}"
    [built] = out.glob("kvtune-*.whl")
    return zipfile.ZipFile(built)


def test_the_wheel_installs_the_kvtune_command(wheel: zipfile.ZipFile) -> None:
    [entry_points] = [n for n in wheel.namelist() if n.endswith(".dist-info/entry_points.txt")]
    assert "kvtune = kvtune_cli.main:run" in wheel.read(entry_points).decode()


def test_the_wheel_holds_every_module_of_the_four_packages(wheel: zipfile.ZipFile) -> None:
    expected = {
        str(path.relative_to(REPO / root))
        for root in PACKAGE_ROOTS
        for path in (REPO / root).rglob("*")
        if path.suffix in (".py", ".typed") and "__pycache__" not in path.parts
    }
    assert expected - set(wheel.namelist()) == set()


def test_dockerignore_lets_every_copied_source_into_the_build_context() -> None:
    rules = (REPO / ".dockerignore").read_text().splitlines()
    assert "*" in rules, ".dockerignore is an allow-list"
    for source in [*builder_copies(), "Dockerfile"]:
        assert f"!{source}" in rules or f"!{source}/" in rules, f"{source} is left out"


def pins() -> dict[str, str]:
    lines = (REPO / "image-constraints.txt").read_text().splitlines()
    found: dict[str, str] = {}
    for line in lines:
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, f"image-constraints.txt: {line!r} is not pinned with =="
            assert canonicalize_name(name) not in found, f"{name} pinned twice"
            found[canonicalize_name(name)] = version
    return found


def test_the_pinned_dependencies_satisfy_pyproject() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    pinned = pins()
    for requirement in map(Requirement, project["dependencies"]):
        name = canonicalize_name(requirement.name)
        assert name in pinned, f"{name} is not pinned in image-constraints.txt"
        assert requirement.specifier.contains(pinned[name], prereleases=True), (
            f"image-constraints.txt pins {name}=={pinned[name]}, outside pyproject's "
            f"{requirement.specifier}"
        )


def test_the_images_user_has_a_passwd_and_group_entry() -> None:
    # kopf names its peering identity after getpass.getuser(), which raises KeyError for a uid
    # /etc/passwd lacks: the operator and the webhook crash-looped at start (the real-node tier,
    # tests/e2e, found it). The python base images have no entry for the distroless id.
    final = re.split(r"^FROM ", (REPO / "Dockerfile").read_text(), flags=re.M)[-1]
    [user] = re.findall(r"^USER (\d+):(\d+)$", final, flags=re.M)
    uid, gid = user
    assert re.search(rf":x:{uid}:{gid}:[^']*' >> /etc/passwd", final), (
        f"the final stage runs as uid {uid} without adding it to /etc/passwd")
    assert re.search(rf":x:{gid}:' >> /etc/group", final), (
        f"the final stage runs as gid {gid} without adding it to /etc/group")

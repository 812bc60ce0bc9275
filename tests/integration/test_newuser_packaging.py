"""The core distribution is ``workqueue-core`` (``workqueue`` on PyPI is another project); the
import package and the console script stay ``workqueue``, and every plugin depends on it."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest
from packaging.requirements import Requirement

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
PLUGIN_PROJECTS = sorted(
    [
        *(ROOT / "plugins").glob("*/pyproject.toml"),
        *(ROOT / "plugins" / "examples").glob("*/pyproject.toml"),
        *(ROOT / "tests" / "plugin_packages").glob("*/pyproject.toml"),
    ]
)


def build_wheel(source: Path, into: Path) -> zipfile.ZipFile:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(into), str(source)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    [wheel] = into.glob("*.whl")
    return zipfile.ZipFile(wheel)


def metadata(wheel: zipfile.ZipFile) -> tuple[str, str]:
    [name] = [n for n in wheel.namelist() if n.endswith(".dist-info/METADATA")]
    [entry_points] = [n for n in wheel.namelist() if n.endswith(".dist-info/entry_points.txt")]
    return wheel.read(name).decode(), wheel.read(entry_points).decode()


def test_the_core_wheel_is_workqueue_core_with_package_and_command_workqueue(
    tmp_path: Path,
) -> None:
    with build_wheel(ROOT, tmp_path) as wheel:
        meta, entry_points = metadata(wheel)
        assert "workqueue/__init__.py" in wheel.namelist()
    assert Parser().parsestr(meta)["Name"] == "workqueue-core"
    assert re.search(r"^workqueue = workqueue\.cli:main$", entry_points, re.MULTILINE)


def test_the_example_plugin_wheel_requires_workqueue_core(tmp_path: Path) -> None:
    with build_wheel(ROOT / "plugins/examples/workqueue-example-greet", tmp_path) as wheel:
        meta, _ = metadata(wheel)
    requires = [Requirement(r).name for r in Parser().parsestr(meta).get_all("Requires-Dist")]
    assert "workqueue-core" in requires and "workqueue" not in requires


@pytest.mark.parametrize("project", PLUGIN_PROJECTS, ids=lambda p: p.parent.name)
def test_every_plugin_depends_on_workqueue_core(project: Path) -> None:
    dependencies = tomllib.loads(project.read_text())["project"]["dependencies"]
    names = [Requirement(d).name for d in dependencies]
    assert "workqueue-core" in names and "workqueue" not in names


def test_the_docs_tell_plugin_authors_to_depend_on_workqueue_core() -> None:
    guide = (ROOT / "docs" / "plugins.md").read_text()
    assert "`workqueue-core>=0.1`" in guide
    assert not re.search(r"[\"`]workqueue(>=|==|~=|\[)", guide)
    readme = (ROOT / "README.md").read_text()
    assert "workqueue-core" in readme

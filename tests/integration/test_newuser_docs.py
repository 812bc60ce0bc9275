"""docs/plugins.md shows the example plugin's real files, and its snippets are complete."""

from __future__ import annotations

import ast
import builtins
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
GUIDE = ROOT / "docs" / "plugins.md"
EXAMPLE = "plugins/examples/workqueue-example-greet"
#: a fenced block that the guide says is a file of this repository, verbatim
INCLUDED = re.compile(r"<!-- file: (\S+) -->\n```\w*\n(.*?)```", re.DOTALL)
CODE = re.compile(r"```(\w*)\n(.*?)```", re.DOTALL)


def included(markdown: str) -> dict[str, str]:
    return {path: body for path, body in INCLUDED.findall(markdown)}


def test_the_guide_shows_the_example_plugin_files_verbatim() -> None:
    files = included(GUIDE.read_text())
    assert set(files) >= {
        f"{EXAMPLE}/pyproject.toml",
        f"{EXAMPLE}/workqueue_example_greet/__init__.py",
        f"{EXAMPLE}/tests/test_greet.py",
    }
    for path, body in files.items():
        assert body == (ROOT / path).read_text(), f"docs/plugins.md's copy of {path} differs"


def test_the_guides_files_build_a_plugin_whose_tests_pass(
    installed_test_plugin: None, tmp_path: Path
) -> None:
    # The guide's pyproject.toml and tests, copied out of the guide into an empty folder, run
    # as a plugin author would run them (the example package itself is installed).
    for path, body in included(GUIDE.read_text()).items():
        if path.startswith(f"{EXAMPLE}/") and not path.endswith("__init__.py"):
            target = tmp_path / path.removeprefix(f"{EXAMPLE}/")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(body)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "INTERNALERROR" not in done.stdout + done.stderr


def _undefined_names(source: str) -> set[str]:
    """Names a snippet loads but neither imports, defines, assigns nor gets from builtins."""
    tree = ast.parse(source)
    bound = set(dir(builtins))
    loaded: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            bound |= {(a.asname or a.name).split(".")[0] for a in node.names}
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            bound.add(node.name)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
        elif isinstance(node, ast.Name):
            (loaded if isinstance(node.ctx, ast.Load) else bound).add(node.id)
        elif isinstance(node, ast.Global):
            bound |= set(node.names)
    return loaded - bound


@pytest.mark.parametrize(
    "snippet",
    [body for lang, body in CODE.findall(GUIDE.read_text()) if lang == "python"],
    ids=lambda body: body.strip().splitlines()[0][:40],
)
def test_every_python_snippet_of_the_guide_imports_what_it_uses(snippet: str) -> None:
    assert _undefined_names(snippet) == set()
    namespace: dict[str, object] = {}
    exec(compile(snippet, "<docs/plugins.md>", "exec"), namespace)  # imports resolve, defs run


# --- the README ---------------------------------------------------------------------------------

README = ROOT / "README.md"


def test_the_readme_describes_up_as_it_behaves() -> None:
    text = " ".join(README.read_text().split())
    assert "when nothing answers at the configured Redis URL" in text
    assert "--data-dir" in text and "WORKQUEUE_DATA_DIR" in text
    assert "WORKQUEUE_SMTP_FROM" in text.split("## Speed")[0]  # named where e-mail is set up
    assert "512 KiB" in text


def test_the_readme_python_example_runs_and_closes_its_client(
    installed_test_plugin: None, tmp_path: Path
) -> None:
    from redis_server import RedisServer

    [example] = [body for lang, body in CODE.findall(README.read_text()) if lang == "python"]
    assert "async with Client.from_url(" in example
    server = RedisServer(tmp_path)  # a private Redis: the example uses the default key prefix
    server.start()
    try:
        code = example.replace("redis://127.0.0.1:6379/0", server.url)
        body = "\n".join("    " + line for line in code.splitlines())
        program = (
            "import asyncio\n\nasync def main():\n"
            f"{body}\n    print(info.status)\n\nasyncio.run(main())\n"
        )
        done = subprocess.run(
            [sys.executable, "-c", program],
            env={**os.environ, "WORKQUEUE_PLUGINS": "send_email"},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == "queued"
        with server.client() as admin:
            assert len(admin.client_list()) == 1  # only this check's own connection
    finally:
        server.stop()

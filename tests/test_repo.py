"""The repository's set-up promises: the README's commands and CI agree."""

from __future__ import annotations

import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _readme_commands():
    text = (ROOT / "README.md").read_text()
    setup = text.split("## Set-up", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.+?)\n```", setup)


def test_readme_has_exactly_two_setup_commands():
    commands = _readme_commands()
    assert len(commands) == 2, commands
    assert "experiments" in commands[0] and "pytest" in commands[1]


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    assert _readme_commands()[1] in ci


def test_top_level_layout():
    names = {p.name for p in ROOT.iterdir() if not p.name.startswith(".") and p.name not in ("runs", "build")}
    names = {n for n in names if not n.endswith(".egg-info") and n != "__pycache__"}
    assert names == {"pyproject.toml", "README.md", "jaxmeta", "tests", "experiments", "benchmarks"}, names


def test_readme_python_example_runs():
    text = (ROOT / "README.md").read_text()
    code = re.findall(r"```python\n(.+?)\n```", text, flags=re.S)[0]
    assert len(code.splitlines()) <= 22
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    assert namespace["y"].shape == (100, 1)
    assert int(namespace["state"].step) == 1000


def test_every_public_function_and_module_has_a_runnable_example():
    """Every name in a jaxmeta module's ``__all__`` documents itself with a doctest (run by this suite).

    Data containers (``NamedTuple``s of arrays) are exempt: the functions that build them carry the examples.
    """
    import importlib
    import inspect
    import pkgutil

    import jaxmeta

    missing = []
    for info in pkgutil.walk_packages(jaxmeta.__path__, "jaxmeta."):
        module = importlib.import_module(info.name)
        for name in getattr(module, "__all__", ()):
            obj = getattr(module, name)
            if inspect.ismodule(obj) or getattr(obj, "__module__", None) != module.__name__:
                continue  # re-exported: checked where it is defined
            if inspect.isclass(obj) and issubclass(obj, tuple):
                continue
            if not callable(obj):
                continue  # constants
            if ">>>" not in (inspect.getdoc(obj) or ""):
                missing.append(f"{info.name}.{name}")
    assert not missing, f"public names without a doctest example: {missing}"

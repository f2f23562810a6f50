"""The remote_code/ bundle: the import closure of the entry modules, flattened by rewriting exactly their import
statements, so that a process that cannot import the package still runs it (and diffusers copies every file).

A toy package exercises each import form the bundler follows; hf_ddpm's own bundle is checked for what diffusers'
loader needs. (tests/test_hub_loading.py runs the pushed bundle through diffusers with hf_ddpm unimportable.)
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from diffusers.utils.dynamic_modules_utils import get_relative_imports

from hf_ddpm.hub.remote_code import REMOTE_CODE_DIR, REMOTE_CODE_ENTRY, bundle_modules, remote_code_files

TOY = {  # every import form the bundler rewrites; `unused` is imported by nothing
    "__init__.py": "VERSION = 3\n",
    "core.py": """\
        import inspect

        from .numbers import (
            LEAF,
            double,
            half as halve,
        )
        from toypkg.numbers import TEN
        from .deep import DEPTH


        class Thing:
            def value(self):
                from .lazy import lazy_value

                return double(TEN) + halve(4) + lazy_value() + DEPTH + LEAF

            def line(self):
                return inspect.currentframe().f_lineno
        """,
    "numbers.py": """\
        import math
        π = math.pi; from .deep.leaf import LEAF  # noqa: E702
        TEN = 10


        def double(x):
            return 2 * x


        def half(x):
            return x / 2
        """,
    "deep/__init__.py": "from .. import VERSION\n\nDEPTH = VERSION - 1\n",
    "deep/leaf.py": "from ..lazy import lazy_value\n\nLEAF = lazy_value() + 1\n",
    "lazy.py": "def lazy_value():\n    return 100\n",
    "unused.py": "UNUSED = 1\n",
}


@pytest.fixture
def make_package(tmp_path, monkeypatch):
    """Write a package {relative path: source} under a fresh sys.path entry; forget it afterwards."""
    made = []

    def make(name: str, files: dict[str, str]) -> Path:
        for rel, source in files.items():
            path = tmp_path / "src" / name / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(textwrap.dedent(source), encoding="utf-8")
        made.append(name)
        monkeypatch.syspath_prepend(str(tmp_path / "src"))
        return tmp_path / "src" / name

    yield make
    for module in [m for m in sys.modules if m.split(".")[0] in made]:
        del sys.modules[module]


def run_flat(folder: Path, code: str, blocked: str) -> dict:
    """Run ``code`` in a fresh interpreter that has ``folder`` as the package ``flat`` and cannot import ``blocked``."""
    script = f"import json, sys\nsys.modules[{blocked!r}] = None\nsys.path.insert(0, {str(folder.parent)!r})\n" + code
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": "", "OMP_NUM_THREADS": "1", "PATH": ""})
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def test_the_closure_of_every_import_form_runs_without_the_package(tmp_path, make_package):
    package = make_package("toypkg", TOY)
    files = bundle_modules({"toypkg.core": ["Thing"]}, root="toypkg", stamp="toypkg 0")
    originals = {"toypkg_core.py": "core.py", "toypkg_numbers.py": "numbers.py", "toypkg_lazy.py": "lazy.py",
                 "toypkg_deep.py": "deep/__init__.py", "toypkg_deep_leaf.py": "deep/leaf.py",
                 "toypkg.py": "__init__.py"}
    assert sorted(files) == sorted([*originals, REMOTE_CODE_ENTRY])
    # diffusers copies from a local folder exactly the entry's own relative imports: all of the bundle
    flat = tmp_path / "flat"
    flat.mkdir()
    (flat / "__init__.py").write_text("")
    for name, source in files.items():
        (flat / name).write_text(source, encoding="utf-8")
    siblings = sorted(name[:-3] for name in files if name != REMOTE_CODE_ENTRY)
    assert sorted(get_relative_imports(flat / REMOTE_CODE_ENTRY)) == siblings

    from toypkg.core import Thing  # the package itself, for reference

    found = run_flat(flat, "from flat.hf_ddpm_remote import Thing\n"
                           "print(json.dumps([Thing().value(), Thing().line(), Thing.__module__]))", blocked="toypkg")
    assert found == [Thing().value(), Thing().line() + 1, "flat.toypkg_core"]  # one header line, then the same lines
    for name, original in originals.items():
        assert len(files[name].splitlines()) == len((package / original).read_text(encoding="utf-8").splitlines()) + 1


@pytest.mark.parametrize(
    "name, core, problem",
    [("toy_import", "import {name}.lazy\n", "`import {name}.lazy` cannot be bundled"),
     ("toy_module", "from . import lazy\n", "imports the module {name}.lazy as a name"),
     ("toy_star", "from .lazy import *\n", "`from {name}.lazy import \\*` cannot be bundled")],
)
def test_an_import_the_flat_layout_cannot_express_is_refused_with_its_place(make_package, name, core, problem):
    make_package(name, {"__init__.py": "", "core.py": "\n" + core.format(name=name), "lazy.py": "X = 1\n"})
    with pytest.raises(RuntimeError, match=f"core.py:2: {problem.format(name=name)}"):
        bundle_modules({f"{name}.core": ["X"]}, root=name, stamp="test")


def test_hf_ddpm_bundle_imports_only_itself_and_diffusers_copies_all_of_it(tmp_path):
    files = remote_code_files()
    assert {path.split("/")[0] for path in files} == {REMOTE_CODE_DIR}
    names = {Path(path).stem for path in files}
    for path, source in files.items():
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.ImportFrom) and node.level:
                assert node.level == 1 and node.module in names, (path, node.lineno)
            imported = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else []
            assert not [m for m in imported if m.split(".")[0] == "hf_ddpm"], (path, node.lineno)
    entry = Path(REMOTE_CODE_DIR) / REMOTE_CODE_ENTRY
    source = files[entry.as_posix()].decode()
    assert {"DDPMDocPipeline", "DDPMDocScheduler", "FourierUNet2DModel"} <= {
        alias.name for node in ast.parse(source).body if isinstance(node, ast.ImportFrom) for alias in node.names}
    (tmp_path / REMOTE_CODE_ENTRY).write_text(source, encoding="utf-8")  # diffusers reads the entry from a file
    assert sorted(get_relative_imports(tmp_path / REMOTE_CODE_ENTRY)) == sorted(names - {entry.stem})


def test_the_bundle_holds_the_guidance_and_the_marginal_bound():
    """The pipeline imports hf_ddpm.guidance and hf_ddpm.marginal_bound: a class-conditional model's sampling and
    bounds work from the bundle (tests/test_hub_loading.py runs them without hf_ddpm)."""
    names = {Path(path).name for path in remote_code_files()}
    assert {"hf_ddpm_guidance.py", "hf_ddpm_marginal_bound.py", "hf_ddpm_pipelines_pipeline_ddpm_doc.py"} <= names

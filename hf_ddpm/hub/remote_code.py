"""The ``remote_code/`` bundle: hf-ddpm's pipeline, scheduler, bound and network as flat sibling files, for users who
have diffusers but not hf-ddpm.

diffusers' remote-code loader (``get_class_from_dynamic_module(folder, "hf_ddpm_remote.py", subfolder="remote_code",
class_name=...)``) imports one entry file from a folder and copies beside it only the files that the entry file
imports itself, as ``from .<file> import ...`` (``diffusers.utils.dynamic_modules_utils.check_imports``). So the
bundle is:

* every module of the package that the entry classes' modules import, followed transitively through their
  ``from .x import`` / ``from ..x import`` / ``from hf_ddpm.x import`` statements wherever they stand (at the top,
  inside functions), read from the installed files and parsed with :mod:`ast`; a new module of the library joins the
  bundle as soon as a bundled module imports it, with no list to keep;
* each module's source with exactly those import statements rewritten, at the positions the parse gives, to import
  its flat sibling (``hf_ddpm.pipelines.pipeline_ddpm_doc`` → ``hf_ddpm_pipelines_pipeline_ddpm_doc.py``); line
  numbers stay those of the installed module (plus the one header line);
* the entry file, which imports from every bundled module the names the bundle uses, so that diffusers copies them all.

An import the flat layout cannot express (``import hf_ddpm.x``, ``from . import <submodule>``, ``from .x import *``)
is a ``RuntimeError`` naming the file and line: the bundle is never built missing a module.
"""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path
from typing import Mapping, Sequence

import hf_ddpm

REMOTE_CODE_DIR = "remote_code"
REMOTE_CODE_ENTRY = "hf_ddpm_remote.py"
# The classes a diffusers-only user takes from the bundle by name (the model card's recipes).
REMOTE_CODE_CLASSES = ("DDPMDocPipeline", "DDPMDocScheduler", "FourierUNet2DModel")


def remote_code_files() -> dict[str, bytes]:
    """This installation's bundle: ``{"remote_code/<file>.py": source}``, the entry file ``hf_ddpm_remote.py``
    exporting :data:`REMOTE_CODE_CLASSES`. Nothing in ``model_index.json`` points here, so hf-ddpm users never run
    these files."""
    entries: dict[str, list[str]] = {}
    for name in REMOTE_CODE_CLASSES:
        entries.setdefault(getattr(hf_ddpm, name).__module__, []).append(name)
    stamp = f"hf-ddpm {hf_ddpm.__version__}, bundled for diffusers' remote-code loader"
    files = bundle_modules(entries, root="hf_ddpm", stamp=stamp)
    return {f"{REMOTE_CODE_DIR}/{name}": source.encode("utf-8") for name, source in files.items()}


def bundle_modules(entries: Mapping[str, Sequence[str]], *, root: str, stamp: str) -> dict[str, str]:
    """Flat files for the modules of the top-level package ``root`` that ``entries`` ({module: names to export})
    need.

    Returns ``{file name: source}``: one ``<flat name>.py`` per module of the import closure and the entry file
    :data:`REMOTE_CODE_ENTRY`. ``stamp`` says where the copies come from (in each file's first line).
    """
    sources: dict[str, str] = {}
    used: dict[str, set[str]] = {module: set(names) for module, names in entries.items()}
    pending = list(entries)
    while pending:
        module = pending.pop()
        if module in sources:
            continue
        spec = importlib.util.find_spec(module)
        path = Path(spec.origin)
        source = path.read_text(encoding="utf-8")
        replacements = []
        for node in ast.walk(ast.parse(source, filename=str(path))):
            found = _bundled_import(node, module, spec.submodule_search_locations is not None, root, path)
            if found is None:
                continue
            target, names = found
            used.setdefault(target, set()).update(alias.name for alias in names)
            pending.append(target)
            imported = ", ".join(alias.name + (f" as {alias.asname}" if alias.asname else "") for alias in names)
            replacements.append((node, f"from .{flat_name(target)} import {imported}"))
        header = f"# {module} from {stamp} (its {root} imports rewritten to sibling files).\n"
        sources[module] = header + _replace_statements(source, replacements)

    files = {}
    for module, source in sources.items():
        name = f"{flat_name(module)}.py"
        if name in files or name == REMOTE_CODE_ENTRY:
            raise RuntimeError(f"remote code bundle: two modules would share the flat file {name}")
        files[name] = source
    entry = [f'"""{", ".join(n for names in entries.values() for n in names)} of {stamp}."""', ""]
    entry += [f"from .{flat_name(module)} import {', '.join(sorted(used[module]))}  # noqa: F401"
              for module in sorted(sources)]
    files[REMOTE_CODE_ENTRY] = "\n".join(entry) + "\n"
    return files


def flat_name(module: str) -> str:
    """The sibling file (without ``.py``) that holds ``module``: its dotted name with underscores."""
    return module.replace(".", "_")


def _bundled_import(node: ast.AST, module: str, is_package: bool, root: str, path: Path):
    """``(target module, aliases)`` when ``node`` imports from a module of ``root``; None for any other node."""
    if not isinstance(node, (ast.Import, ast.ImportFrom)):
        return None
    where = f"remote code bundle: {path}:{node.lineno}"
    if isinstance(node, ast.Import):
        for alias in node.names:
            if _inside(alias.name, root):
                raise RuntimeError(f"{where}: `import {alias.name}` cannot be bundled; import names from it instead")
        return None
    if node.level == 0:
        if not _inside(node.module, root):
            return None
        target = node.module
    else:  # inside root: the package is top-level
        package = module if is_package else module.rpartition(".")[0]
        target = importlib.util.resolve_name("." * node.level + (node.module or ""), package)
    if any(alias.name == "*" for alias in node.names):
        raise RuntimeError(f"{where}: `from {target} import *` cannot be bundled; name what is imported")
    if importlib.util.find_spec(target).submodule_search_locations is not None:  # a package: names or submodules?
        for alias in node.names:
            if importlib.util.find_spec(f"{target}.{alias.name}") is not None:
                raise RuntimeError(f"{where}: imports the module {target}.{alias.name} as a name; "
                                   f"write `from .{alias.name} import ...` instead")
    return target, node.names


def _inside(module: str, root: str) -> bool:
    return module == root or module.startswith(root + ".")


def _replace_statements(source: str, replacements: list[tuple[ast.stmt, str]]) -> str:
    """``source`` with each statement replaced by its text; a statement over several lines leaves blank lines, so the
    lines after it keep their numbers. (ast's column offsets count UTF-8 bytes.)"""
    lines = source.splitlines(keepends=True)
    for node, text in sorted(replacements, key=lambda r: (r[0].lineno, r[0].col_offset), reverse=True):
        first, last = lines[node.lineno - 1].encode(), lines[node.end_lineno - 1].encode()
        joined = first[:node.col_offset] + text.encode() + last[node.end_col_offset:]
        lines[node.lineno - 1:node.end_lineno] = [joined.decode()] + ["\n"] * (node.end_lineno - node.lineno)
    return "".join(lines)

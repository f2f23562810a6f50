"""Every fenced ``python`` and ``bash`` block of README.md and docs/ runs, or says why not.

How the blocks run (the only things that stand in for a user's machine; nothing in a block is rewritten):

* in a fresh folder per page holding ``ddpm-digits/``: a copy of a tiny pipeline trained here by the trainer with its
  defaults but a one-level UNet of 3,000 parameters (``DOCS_UNET``) and two steps (1000 timesteps, learned_range,
  Fourier features, the digits: the shape of the real default model, so every argument the docs give it is valid);
* with a stand-in Hub on 127.0.0.1 (``tests/hub_support.py``) reached through ``HF_ENDPOINT`` with the token in
  ``HF_TOKEN``, and a Hub cache (``HF_HUB_CACHE``) that holds ``your-name/ddpm-digits`` as that stand-in received it
  from ``push_output_folder``;
* every page in one fresh interpreter, its blocks in page order: ``python`` blocks in one namespace per page (a page
  reads like a notebook), offline (``HF_HUB_OFFLINE=1``: a Hub id loads from that cache); a ``bash`` block of
  ``hf-ddpm …`` lines runs each line through ``hf_ddpm.cli.main`` — the function the ``hf-ddpm`` console script
  calls — with its words split as bash splits them (``shlex``), online so that ``hf-ddpm push`` reaches the stand-in
  (an interpreter start per command would cost more than the commands); any other ``bash`` block runs with
  ``bash -euo pipefail``.

A block that cannot run there has an HTML comment on the line right before it:

* ``<!-- not run: REASON -->``: skipped;
* ``<!-- flags checked: REASON -->`` (bash only): each ``hf-ddpm …`` / ``python -m hf_ddpm …`` command is parsed by
  ``hf_ddpm.cli``'s parser, each ``accelerate launch … training/train.py …`` by accelerate's launcher parser and the
  script's own parser, its settings then checked by ``RunConfig`` (as the script does before any work), each
  ``accelerate launch … -m hf_ddpm …`` by the launcher's parser and ``hf_ddpm.cli``'s; nothing runs.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = sorted([REPO / "README.md", *(REPO / "docs").rglob("*.md")])
MARKER = re.compile(r"^<!--\s*(not run|flags checked):\s*(.*?)\s*-->$")
FENCE = re.compile(r"^(\s*)```(\w*)\s*$")
RUNNABLE = ("python", "bash")
HUB_REPO = "your-name/ddpm-digits"  # the Hub id the docs use


@dataclass
class Block:
    page: Path
    line: int  # of the first line of code
    language: str
    code: str
    marker: str | None  # "not run", "flags checked" or None
    reason: str

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(REPO)}:{self.line}"


def fenced_blocks(page: Path) -> list[Block]:
    """The fenced blocks of ``page`` (indented ones, e.g. in a list, dedented), each with the marker comment on the
    line right before its opening fence."""
    lines = page.read_text(encoding="utf-8").split("\n")
    blocks, i = [], 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        indent, language = opening.group(1), opening.group(2)
        end = next(j for j in range(i + 1, len(lines)) if lines[j].strip() == "```")
        code = "\n".join(line[len(indent):] for line in lines[i + 1:end]) + "\n"
        marker = MARKER.match(lines[i - 1].strip()) if i > 0 else None
        blocks.append(Block(page, i + 2, language, code, marker and marker.group(1), marker.group(2) if marker else ""))
        i = end + 1
    return blocks


BLOCKS = [block for page in PAGES for block in fenced_blocks(page)]
RUN_PAGES = sorted({b.page for b in BLOCKS if b.language in RUNNABLE and b.marker is None})
FLAG_BLOCKS = [b for b in BLOCKS if b.marker == "flags checked"]


def page_id(page: Path) -> str:
    return str(page.relative_to(REPO))


def test_the_blocks_are_found_and_every_marker_gives_a_reason():
    assert len(PAGES) > 10 and REPO / "README.md" in PAGES
    assert sum(b.language == "python" for b in BLOCKS) > 10 and sum(b.language == "bash" for b in BLOCKS) > 10
    for block in BLOCKS:
        if block.marker:
            assert block.language in RUNNABLE, f"{block.where}: a marker on a {block.language or 'plain'} block"
            assert len(block.reason) > 10, f"{block.where}: say why the block is {block.marker}"
        if block.marker == "flags checked":
            assert block.language == "bash", f"{block.where}: only command lines can have their flags checked"
    # a comment that looks like a marker but is not one (a typo would silently run or skip nothing)
    for page in PAGES:
        for number, line in enumerate(page.read_text(encoding="utf-8").split("\n"), 1):
            if re.match(r"\s*<!--\s*(not[ -]run|flags?[ -]checked)", line, re.I):
                assert MARKER.match(line.strip()), f"{page_id(page)}:{number}: malformed marker {line.strip()!r}"


# ---------------------------------------------------------------------------------------------------------------------
# The fixtures: a tiny trained pipeline, a stand-in Hub holding it, its cache


# The fixture's network: the default's shape (Fourier features, learned_range: 2 output channels) at its smallest, one
# level without attention, so that a 1000-step chain takes seconds.
DOCS_UNET = dict(sample_size=8, in_channels=1, out_channels=2, block_out_channels=(4,), layers_per_block=1,
                 down_block_types=("DownBlock2D",), up_block_types=("UpBlock2D",), norm_num_groups=2,
                 add_attention=False)


@pytest.fixture(scope="module")
def docs_world(tmp_path_factory):
    """(the trained ``ddpm-digits`` folder, the Hub cache, the stand-in Hub, its token) for the module's tests."""
    import huggingface_hub

    from hf_ddpm import hub
    from hub_support import TOKEN, FakeHub, populate_hub_cache
    from training_support import train_tiny

    root = tmp_path_factory.mktemp("docs")
    config = root / "docs_unet.json"
    config.write_text(json.dumps(DOCS_UNET))
    model = root / "ddpm-digits"
    train_tiny(str(config), model, num_train_timesteps=1000, max_train_steps=2, eval_samples=0)
    server = FakeHub().__enter__()
    with pytest.MonkeyPatch.context() as patch:  # the push of the cached repo, through the real client
        patch.setattr(huggingface_hub.constants, "ENDPOINT", server.url)
        patch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
        hub.push_output_folder(model, HUB_REPO, token=TOKEN)
    populate_hub_cache(root / "cache", HUB_REPO, server.repos[HUB_REPO]["files"])
    yield model, root / "cache", server, TOKEN
    server.__exit__(None, None, None)


def environment(cache: Path, server, token: str, *, offline: bool) -> dict:
    venv_bin = str(Path(sys.executable).parent)  # hf-ddpm, the console script of this environment
    return {**os.environ, "PATH": venv_bin + os.pathsep + os.environ.get("PATH", ""), "HF_ENDPOINT": server.url,
            "HF_TOKEN": token, "HF_HUB_CACHE": str(cache), "HF_HOME": str(cache.parent / "hf_home"),
            "HF_HUB_OFFLINE": "1" if offline else "0", "HF_HUB_DISABLE_PROGRESS_BARS": "1", "OMP_NUM_THREADS": "1",
            "DIFFUSERS_VERBOSITY": "error", "TQDM_DISABLE": "1", "MPLBACKEND": "Agg"}


# One interpreter runs every page (starting one costs more than most pages' blocks): each page in its own folder
# and namespace, its blocks in order; a failing block ends its page, not the others.
RUNNER = """
import json, os, shlex, subprocess, sys, time, traceback
import huggingface_hub.constants
from hf_ddpm.cli import main as hf_ddpm_main

def hf_ddpm(argv):  # what the console script hf-ddpm runs, online (the push reaches the stand-in Hub)
    huggingface_hub.constants.HF_HUB_OFFLINE = False
    try:
        status = hf_ddpm_main(argv)
    except SystemExit as exit:
        status = exit.code
    finally:
        huggingface_hub.constants.HF_HUB_OFFLINE = True
    if status not in (0, None):
        raise RuntimeError(f"hf-ddpm {shlex.join(argv)} exited with status {status}")

pages, results = json.load(open(sys.argv[1])), {}
for page in pages:
    os.chdir(page["folder"])
    namespace, start = {"__name__": "__main__"}, time.process_time()
    try:
        for block in page["blocks"]:
            if block["kind"] == "python":
                exec(compile(block["code"], block["file"], "exec"), namespace)
            elif block["kind"] == "hf-ddpm":
                for argv in block["commands"]:
                    hf_ddpm(argv)
            else:
                done = subprocess.run(["bash", "-euo", "pipefail", "-c", block["code"]], capture_output=True,
                                      text=True, env={**os.environ, "HF_HUB_OFFLINE": "0"})
                if done.returncode:
                    raise RuntimeError(f"bash block at {block['where']} failed:\\n{done.stdout}{done.stderr}")
        results[page["page"]] = {"error": None}
    except BaseException:
        results[page["page"]] = {"error": traceback.format_exc()}
    results[page["page"]]["cpu_seconds"] = time.process_time() - start
json.dump(results, open(sys.argv[2], "w"))
"""


def hf_ddpm_commands(code: str) -> list[list[str]] | None:
    """The argument lists of a bash block made of ``hf-ddpm …`` commands only (comments and continuation lines
    allowed); None for any other block."""
    found = commands(code)
    if any("&&" in shlex.split(line, comments=True) for line in code.replace("\\\n", " ").split("\n")):
        return None
    return [c[1:] for c in found] if found and all(c[0] == "hf-ddpm" for c in found) else None


def runner_block(block: Block) -> dict:
    if block.language == "python":  # the code keeps its line numbers in the page: a traceback names the page's line
        return {"kind": "python", "file": str(block.page), "code": "\n" * (block.line - 1) + block.code}
    argvs = hf_ddpm_commands(block.code)
    if argvs is not None:
        return {"kind": "hf-ddpm", "commands": argvs}
    return {"kind": "bash", "where": block.where, "code": block.code}


@pytest.fixture(scope="module")
def page_results(docs_world, tmp_path_factory):
    """page → {"error": traceback or None, "cpu_seconds": the runner's CPU time on it}, after every page ran."""
    model, cache, server, token = docs_world
    root = tmp_path_factory.mktemp("pages")
    pages = []
    for number, page in enumerate(RUN_PAGES):
        folder = root / f"{number:02d}-{page.stem}"
        shutil.copytree(model, folder / "ddpm-digits", symlinks=True)
        blocks = [runner_block(b) for b in BLOCKS if b.page == page and b.marker is None and b.language in RUNNABLE]
        pages.append({"page": page_id(page), "folder": str(folder), "blocks": blocks})
    (root / "pages.json").write_text(json.dumps(pages))
    done = subprocess.run([sys.executable, "-c", RUNNER, str(root / "pages.json"), str(root / "results.json")],
                          capture_output=True, text=True, timeout=900, env=environment(cache, server, token, offline=True))
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads((root / "results.json").read_text())


@pytest.mark.parametrize("page", RUN_PAGES, ids=page_id)
def test_the_snippets_of_a_page_run(page, page_results):
    result = page_results[page_id(page)]
    assert result["error"] is None, f"a block of {page_id(page)} failed:\n{result['error']}"


def test_hf_ddpm_lines_run_through_the_console_scripts_entry_point():
    """A bash block of ``hf-ddpm`` lines runs in the runner through the function the console script calls; any other
    shell runs in bash."""
    from importlib.metadata import entry_points

    script = next(e for e in entry_points(group="console_scripts") if e.name == "hf-ddpm")
    assert script.value == "hf_ddpm.cli:main"
    assert hf_ddpm_commands("# a\nhf-ddpm sample --model m \\\n  --out g.png   # grid\nhf-ddpm evaluate --model m\n") == [
        ["sample", "--model", "m", "--out", "g.png"], ["evaluate", "--model", "m"]]
    assert hf_ddpm_commands("hf-ddpm sample && cp a b\n") is None and hf_ddpm_commands("ls\n") is None


# ---------------------------------------------------------------------------------------------------------------------
# "flags checked": the commands' own parsers


def commands(code: str) -> list[list[str]]:
    """The commands of a bash block: continuation lines joined, comments dropped, one per line and per ``&&``."""
    found = []
    for line in code.replace("\\\n", " ").split("\n"):
        current = []
        for word in shlex.split(line, comments=True):
            if word == "&&":
                found.append(current)
                current = []
            else:
                current.append(word)
        found.append(current)
    return [c for c in found if c]


def train_script():
    spec = importlib.util.spec_from_file_location("docs_train_script", REPO / "training" / "train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def check_flags(command: list[str]) -> None:
    """Parse ``command`` as its program would (argparse exits with status 2 on a flag it does not know)."""
    from accelerate.commands.launch import launch_command_parser

    from hf_ddpm.cli import build_parser

    while command and re.fullmatch(r"[A-Z_]+=\S*", command[0]):  # environment assignments
        command = command[1:]
    if command[0] == "hf-ddpm" or command[:3] == ["python", "-m", "hf_ddpm"]:
        build_parser().parse_args(command[1 if command[0] == "hf-ddpm" else 3:])
    elif command[:2] == ["accelerate", "launch"]:
        launch = launch_command_parser().parse_args(command[2:])
        if launch.module and launch.training_script == "hf_ddpm":  # accelerate launch … -m hf_ddpm COMMAND …
            build_parser().parse_args(launch.training_script_args)
            return
        assert launch.training_script == "training/train.py", command
        script = train_script()
        settings = vars(script.build_parser().parse_args(launch.training_script_args))
        script.RunConfig.from_settings(settings)
    else:
        raise AssertionError(f"not a command whose flags can be checked: {shlex.join(command)}")


@pytest.mark.parametrize("block", FLAG_BLOCKS, ids=lambda b: b.where)
def test_the_flags_of_a_command_block_exist(block):
    assert commands(block.code), f"{block.where}: no command"
    for command in commands(block.code):
        try:
            check_flags(command)
        except SystemExit as exit:
            raise AssertionError(f"{block.where}: {shlex.join(command)} is refused by its parser") from exit


def test_the_flag_check_refuses_a_renamed_flag():
    """The check fails where a user's command would: an unknown flag of either program, a bad value, a contradiction."""
    for command in ("hf-ddpm sample --model m --num-imgs 4", "accelerate launch training/train.py --learning_speed 1",
                    "accelerate launch --num_processess 2 training/train.py"):
        with pytest.raises(SystemExit):
            check_flags(shlex.split(command))
    from hf_ddpm.errors import ParameterError

    with pytest.raises(ParameterError, match="loss_type"):
        check_flags(shlex.split("accelerate launch training/train.py --loss_type simple --variance_type learned_range"))
    with pytest.raises(AssertionError, match="not a command"):
        check_flags(["cp", "a", "b"])
    assert commands("a --x 1 \\\n  --y 2 && b  # note\n# c\nd\n") == [["a", "--x", "1", "--y", "2"], ["b"], ["d"]]


# ---------------------------------------------------------------------------------------------------------------------
# The README's links into docs/ (mkdocs checks the site's own links; GitHub shows the README, so they are checked here)


def heading_anchors(page: Path) -> set[str]:
    """The anchors GitHub and mkdocs give the page's headings: lower case, punctuation dropped, spaces to dashes."""
    anchors = set()
    in_code = False
    for line in page.read_text(encoding="utf-8").split("\n"):
        if FENCE.match(line):
            in_code = not in_code
        elif not in_code and line.startswith("#"):
            text = re.sub(r"[`*_]", "", line.lstrip("#").strip()).lower()
            anchors.add(re.sub(r"\s+", "-", re.sub(r"[^\w\s-]", "", text)))
    return anchors


def test_the_readme_links_lead_to_pages_and_headings():
    readme = REPO / "README.md"
    text = readme.read_text(encoding="utf-8")
    links = re.findall(r"\]\(([^)\s]+)\)", text)
    local = [link for link in links if not re.match(r"https?://", link)]
    assert len(local) > 15
    for link in local:
        path, _, anchor = link.partition("#")
        target = (readme.parent / path) if path else readme
        assert target.exists(), f"README.md links to {link}, which does not exist"
        if anchor and target.suffix == ".md":
            assert anchor in heading_anchors(target), f"README.md links to {link}: no such heading"
    assert len(text.split("\n")) <= 250


@pytest.mark.parametrize("page", [*PAGES, REPO / "model_card.md"], ids=page_id)
def test_no_page_holds_control_characters(page):
    """A TeX command written through a Python string ("\\tilde", "\\beta") becomes a tab or a backspace, which the
    site shows as raw text: no page may hold a control character other than the newline."""
    text = page.read_text(encoding="utf-8")
    found = [(number, line) for number, line in enumerate(text.split("\n"), 1)
             if re.search(r"[\x00-\x09\x0b-\x1f\x7f]", line)]
    assert not found, f"{page.name}: control characters on lines {[number for number, _ in found]}"


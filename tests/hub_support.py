"""Test support for the Hub tests: a stand-in Hub server on 127.0.0.1, a tiny pipeline and its run record, a populated
Hub cache."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import os
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from hf_ddpm import DDPMDocPipeline, DDPMDocScheduler
from hf_ddpm.training.record import RunResults
from helpers import tiny_unet

TOKEN = "hf_fake_write_token"
USER = "tester"  # the namespace the stand-in gives repo ids without one


class FakeHub(ThreadingHTTPServer):
    """The Hub endpoints of a push, on 127.0.0.1; ``commits`` records what each commit uploaded."""

    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _HubHandler)
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        self.repos: dict[str, dict] = {}  # repo id -> {"private": bool, "files": {path: bytes}}
        self.commits: list[dict] = []  # {"repo_id", "summary", "files": {path: bytes}}
        self.requests: list[tuple[str, str, str | None]] = []  # (method, path, Authorization header)
        self.fail: dict[str, int] = {}  # endpoint ("create", "info", "preupload", "commit") -> HTTP status to answer
        self.release_commits = threading.Event()
        self.release_commits.set()  # clear() to hold commits until set() again
        self.commit_arrived = threading.Event()

    def __enter__(self):
        threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.release_commits.set()
        self.shutdown()
        self.server_close()


class _HubHandler(BaseHTTPRequestHandler):
    server: FakeHub

    def log_message(self, *args):  # keep pytest output clean
        pass

    def _answer(self, status: int, payload: dict) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        if status >= 400:
            self.send_header("X-Error-Message", payload.get("error", ""))
        if status >= 500:  # huggingface_hub retries a failed commit 5 times: at once (1 s each, not 1, 2, 4, 8, 8 s)
            self.send_header("Retry-After", "0")
        self.end_headers()
        self.wfile.write(body)

    def _failing(self, endpoint: str) -> bool:
        status = self.server.fail.get(endpoint)
        if status is not None:
            self._answer(status, {"error": f"stand-in Hub told to answer {status} on {endpoint}"})
        return status is not None

    def do_GET(self):
        self.server.requests.append(("GET", self.path, self.headers.get("Authorization")))
        match = re.fullmatch(r"/api/models/([^/]+/[^/?]+)(?:/revision/[^?]*)?(?:\?.*)?", self.path)
        if match and not self._failing("info"):
            repo_id = match.group(1)
            if repo_id in self.server.repos:
                self._answer(200, {"id": repo_id, "sha": "0" * 40, "private": self.server.repos[repo_id]["private"]})
            else:
                self._answer(404, {"error": "Repository not found"})
        elif not match:
            self._answer(404, {"error": f"no such endpoint {self.path}"})

    def do_POST(self):
        self.server.requests.append(("POST", self.path, self.headers.get("Authorization")))
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.path == "/api/repos/create":
            self._create(json.loads(body))
        elif self.path == "/api/validate-yaml":
            self._answer(200, {"errors": [], "warnings": []})
        elif match := re.fullmatch(r"/api/models/([^/]+/[^/]+)/preupload/[^/?]+(\?.*)?", self.path):
            if not self._failing("preupload"):
                files = json.loads(body)["files"]
                self._answer(200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                                             for f in files]})
        elif match := re.fullmatch(r"/api/models/([^/]+/[^/]+)/commit/[^/?]+(\?.*)?", self.path):
            self._commit(match.group(1), body)
        else:
            self._answer(404, {"error": f"no such endpoint {self.path}"})

    def _create(self, payload: dict) -> None:
        if self._failing("create"):
            return
        repo_id = f"{payload.get('organization') or USER}/{payload['name']}"
        if repo_id in self.server.repos:
            self._answer(409, {"error": "You already created this model repo", "url": f"{self.server.url}/{repo_id}"})
            return
        self.server.repos[repo_id] = {"private": payload.get("visibility") == "private", "files": {}}
        self._answer(200, {"url": f"{self.server.url}/{repo_id}", "name": repo_id})

    def _commit(self, repo_id: str, body: bytes) -> None:
        self.server.commit_arrived.set()
        self.server.release_commits.wait(timeout=60)
        if self._failing("commit"):
            return
        if repo_id not in self.server.repos:
            self._answer(404, {"error": "Repository not found"})
            return
        lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
        header, operations = lines[0], lines[1:]
        files = {}
        for op in operations:
            if op["key"] != "file" or op["value"].get("encoding") != "base64":
                self._answer(400, {"error": f"stand-in Hub only takes inline base64 files, got {op['key']}"})
                return
            files[op["value"]["path"]] = base64.b64decode(op["value"]["content"])
        self.server.repos[repo_id]["files"].update(files)
        oid = hashlib.sha1(body).hexdigest()
        self.server.commits.append({"repo_id": repo_id, "summary": header["value"]["summary"], "files": files})
        self._answer(200, {"commitUrl": f"{self.server.url}/{repo_id}/commit/{oid}", "commitOid": oid, "success": True})


def tiny_pipeline(seed: int = 0, num_train_timesteps: int = 50, fourier_periods=None) -> DDPMDocPipeline:
    """A DDPMDocPipeline with the tests' tiny UNet (``helpers.tiny_unet``: attention at 4×4, seeded) for 8×8 grey
    images; with ``fourier_periods`` the same network as a ``FourierUNet2DModel``."""
    unet = tiny_unet(seed=seed, fourier_periods=fourier_periods)
    return DDPMDocPipeline(unet=unet, scheduler=DDPMDocScheduler(num_train_timesteps=num_train_timesteps))


RESULTS = RunResults(
    global_step=100, global_batch_size=32, num_processes=1, threads_per_process=2, hardware="CPU (2 cores), 1 process",
    images_seen=3200, train_seconds=12.0, sampling_seconds=1.5, eval_seconds=2.5, total_seconds=17.0,
    test_bits_per_dim=2.5, test_bits_per_dim_stderr=0.05, test_bits_per_dim_timesteps=4,
    test_bits_per_dim_method="unbiased estimate from 4 timesteps", test_bound={}, test_split="digits, test (359 images)",
    num_test_images=359, final_train_loss=0.5, train_loss_history={"steps": [100], "losses": [0.5]}, eval_log=[],
    num_samples=4, num_inference_steps=50,
)


def run_results(**changes) -> RunResults:
    """The results of a short run of :func:`tiny_pipeline`'s network (:data:`RESULTS`), some fields changed."""
    return dataclasses.replace(RESULTS, **changes)


def populate_hub_cache(cache: Path, repo_id: str, files: dict[str, bytes], commit: str = "c0ffee" * 6 + "beef") -> Path:
    """Lay ``files`` out as huggingface_hub's cache holds a downloaded model repo; returns the snapshot folder.

    ``models--{user}--{name}/blobs/<etag>`` holds the contents (sha256 for LFS files, the git blob id otherwise), ``snapshots/<commit>/<path>`` are relative links to
    the blobs, and ``refs/main`` names the commit (what offline loading resolves ``main`` with).
    """
    repo_dir = cache / f"models--{repo_id.replace('/', '--')}"
    (repo_dir / "refs").mkdir(parents=True)
    (repo_dir / "refs" / "main").write_text(commit)
    for path, data in files.items():
        if path.endswith((".safetensors", ".bin")):  # LFS files: the blob is named by the content's sha256
            etag = hashlib.sha256(data).hexdigest()
        else:  # regular git files: by their git blob id
            etag = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
        blob = repo_dir / "blobs" / etag
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = repo_dir / "snapshots" / commit / path
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    return repo_dir / "snapshots" / commit

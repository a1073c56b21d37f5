"""Methods answered in a process of their own: sandboxed for untrusted plugins (`--isolate`), and a fresh one
that answers a few episodes again to check that a method's answers do not depend on earlier episodes.

A method process (benchmark/method_child.py) gets only what methods.base.Handed holds, written to a folder of
its own: arrays in handle order, base-pool labels and groups, cache keys. Under `--isolate` it runs inside
bubblewrap with no network, a read-only view of the Python installation and of the code it runs, and nothing
else of this machine: not the data directory, the task's image folders, the harness's cache, the results files
and their manifests, or the user's home; its environment is cleared. It prepares once with its own cache folder
writable (so SDFT's step 1 stays cached between runs), then serves every episode from a fresh fork of a second,
prepared process whose whole file system is read-only: memory cannot build up from one episode to the next.
Its replies are JSON lines and .npy payloads read without unpickling; the harness scores them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from importlib import util as import_util
from pathlib import Path

import numpy as np

from benchmark.scoring import MethodFailed, ScoreError
from common.errors import UserError
from methods.base import Handed
from methods.concat import ConcatRows
from methods.progress import SILENT, Progress
from methods.registry import METHODS

INSTALL_BWRAP = (
    "--isolate needs bubblewrap, and `bwrap` is not on PATH; install it (Debian/Ubuntu: "
    "`apt-get install bubblewrap`) or run without --isolate"
)
ARRAYS = ("base", "base_labels", "base_groups", "episode_classes", "features", "images")
TORCH_CACHE = "/tmp/torch"  # torch's compile cache in the sandbox, made before /tmp turns read-only for serving
BLOCK_BYTES = 16 << 20  # a large handed array is written this much at a time, a large reply read so
# a method process writes its replies with its own code: a reply that claims more than these is not believed
MAX_HEADER_BYTES = 1 << 20
MAX_PAYLOAD_BYTES = 1 << 36  # scores of the largest scene's windows, many times over


class MethodProcessFailed(ScoreError):
    """The method's process reported an error or ended: the method's failure, named by MethodFailed."""


def bwrap() -> str:
    """The bubblewrap binary, checked to start a sandbox here; a one-line UserError where it cannot."""
    path = shutil.which("bwrap")
    if path is None:
        raise UserError(INSTALL_BWRAP)
    probe = subprocess.run(
        [path, "--unshare-all", "--die-with-parent", "--ro-bind", "/", "/", "true"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if probe.returncode != 0:
        why = (probe.stderr.strip().splitlines() or ["no message"])[-1]
        raise UserError(
            f"--isolate: bubblewrap cannot start a sandbox on this machine ({why}); it needs user "
            "namespaces (or root), or run without --isolate"
        )
    return path


def module_location(module: str) -> tuple[Path, Path]:
    """(what to bind, the folder that goes on PYTHONPATH) for a top-level module or package, found without
    importing it."""
    top = module.split(".")[0]
    spec = import_util.find_spec(top)
    if spec is None or (spec.origin is None and not spec.submodule_search_locations):
        raise UserError(f"--isolate: cannot find the code of module {top!r} to run it in the sandbox")
    if spec.submodule_search_locations:
        folder = Path(list(spec.submodule_search_locations)[0]).resolve()
        return folder, folder.parent
    origin = Path(spec.origin).resolve()
    return origin, origin.parent


def system_mounts() -> list[str]:
    args = []
    for top in ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/etc"):
        if os.path.islink(top):
            args += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            args += ["--ro-bind", top, top]
    return args


def sandbox_argv(
    modules: list[str], handed: Path, cache: Path, writable_cache: bool, hidden: list[Path], device: str
) -> tuple[list[str], str]:
    """(the bwrap prefix, the PYTHONPATH inside) for a method process."""
    args = [
        bwrap(),
        "--unshare-all",
        "--die-with-parent",
        "--new-session",
        "--clearenv",
        *system_mounts(),
        "--proc",
        "/proc",
        "--dev",
        "/dev",
        "--tmpfs",
        "/tmp",
        "--dir",
        TORCH_CACHE,  # made before /tmp turns read-only for serving: importing timm (torch._dynamo) makes it
    ]
    for prefix in sorted({Path(sys.base_prefix).resolve(), Path(sys.prefix).resolve()}):
        args += ["--ro-bind", str(prefix), str(prefix)]
    if Path(sys.prefix) != Path(sys.prefix).resolve():
        args += ["--ro-bind", str(Path(sys.prefix).resolve()), str(Path(sys.prefix))]
    path_entries, bound = [], [Path(sys.base_prefix).resolve(), Path(sys.prefix).resolve()]
    for module in dict.fromkeys(["benchmark", "methods", "tasks", "common", *modules]):
        code, entry = module_location(module)
        args += ["--ro-bind", str(code), str(code)]
        path_entries.append(str(entry))
        bound.append(code)
    bound += [Path(a) for a in ("/usr", "/etc") if os.path.isdir(a)]
    for secret in hidden:  # a folder the user keeps inside a bound one (data inside the venv): hidden again
        secret = Path(secret).resolve()
        if any(secret != b and b in secret.parents for b in bound):
            args += ["--tmpfs", str(secret)]
    args += ["--ro-bind", str(handed), "/handed", "--bind" if writable_cache else "--ro-bind", str(cache), "/cache"]
    if not writable_cache:  # serving: a fork that wrote a file could leave it for the next
        args += ["--mqueue", "/dev/mqueue", "--remount-ro", "/tmp", "--remount-ro", "/dev"]
    if device.startswith("cuda"):
        for name in sorted(os.listdir("/dev")):
            if name.startswith("nvidia"):
                args += ["--dev-bind", f"/dev/{name}", f"/dev/{name}"]
    pythonpath = ":".join(dict.fromkeys(path_entries))
    for name, value in sandbox_env(pythonpath).items():
        args += ["--setenv", name, value]
    return args + ["--chdir", "/tmp", "--"], pythonpath


def sandbox_env(pythonpath: str) -> dict:
    """The whole environment of a sandboxed method process."""
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": "/tmp",
        "LANG": "C.UTF-8",
        "PYTHONNOUSERSITE": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONPATH": pythonpath,
        "OMP_NUM_THREADS": "1",
        "JOBLIB_MULTIPROCESSING": "0",
        "TORCHINDUCTOR_CACHE_DIR": TORCH_CACHE,
    }  # no /dev/shm to share while serving: scikit-learn runs serially
    for name in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):  # numerics as the harness has them
        if name in os.environ:
            env[name] = os.environ[name]
    return env


@dataclass
class Placement:
    """Where a method process runs: sandboxed or not, what it may see and write."""

    isolate: bool
    cache: Path  # the method's own cache folder (runner.method_cache)
    hidden: tuple[Path, ...] = ()  # folders never to be visible in the sandbox (data, results, caches, home)
    device: str = "cpu"


def save_rows(path: Path, array) -> None:
    """`array` (an ndarray, or a read-only memory map of a map's windows) as an .npy file at `path`, a block of
    rows at a time: a scene's pixels never all sit in memory."""
    dtype, shape = np.dtype(array.dtype), tuple(array.shape)
    rows = max(1, BLOCK_BYTES // max(1, dtype.itemsize * int(np.prod(shape[1:], dtype=np.int64))))
    with open(path, "wb") as f:
        header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": shape}
        np.lib.format.write_array_header_1_0(f, header)
        for start in range(0, shape[0], rows):
            f.write(np.ascontiguousarray(array[start : start + rows]).tobytes())


def write_handed(folder: Path, meta: dict, given: Handed | None) -> None:
    """What a method process is handed, into `folder`: handed.json (`meta`, and `given`'s keys) and an .npy file
    per array; an array of parts (a map's images: the base task's, then the windows', methods/concat.py) as a
    file per part (`NAME.I.npy`), which the process maps back into one."""
    if given is not None:
        parts = {}
        for name in ARRAYS:
            value = getattr(given, name)
            if isinstance(value, ConcatRows):
                parts[name] = len(value.parts)
                for i, part in enumerate(value.parts):
                    save_rows(folder / f"{name}.{i}.npy", part)
            elif value is not None:
                np.save(
                    folder / f"{name}.npy",
                    np.asarray(value).astype(str) if name == "base_groups" else value,
                    allow_pickle=False,
                )
        meta = {**meta, "task_key": given.task_key, "n_rows": given.n_rows, "keys": given.keys, "parts": parts}
    (folder / "handed.json").write_text(json.dumps(meta))


def handed_folder(meta: dict, given: Handed | None, place: Placement) -> Path:
    """A new folder holding what a method process placed at `place` is handed (write_handed); whoever takes it
    over removes it."""
    folder = Path(tempfile.mkdtemp(prefix="marsfsl-handed-"))
    try:
        write_handed(folder, {**meta, "cache": "/cache" if place.isolate else str(place.cache)}, given)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return folder


class MethodProcess:
    """One method process (benchmark/method_child.py) and the pipes to it."""

    def __init__(
        self,
        phase: str,
        meta: dict,
        folder: Path,
        place: Placement,
        progress: Progress = SILENT,
        fork: bool = False,
        owns_folder: bool = True,
    ):
        """`folder`: what it is handed (handed_folder), removed when it closes if it `owns_folder`."""
        self.progress, self.folder, self.owns_folder = progress, folder, owns_folder
        place.cache.mkdir(parents=True, exist_ok=True)
        request_r, self._request_w = os.pipe()
        self._reply_r, reply_w = os.pipe()
        folder = "/handed" if place.isolate else str(self.folder)
        argv = [sys.executable, "-m", "benchmark.method_child", phase, folder, str(request_r), str(reply_w)]
        env = None
        if place.isolate:
            prefix, _ = sandbox_argv(
                meta.get("modules", []), self.folder, place.cache, phase == "prepare", list(place.hidden), place.device
            )
            argv = prefix + argv
        else:
            entries = [str(module_location(m)[1]) for m in ["benchmark", *meta.get("modules", [])]]
            entries += [str(Path.cwd()), os.environ.get("PYTHONPATH", "")]
            env = {**os.environ, "PYTHONPATH": os.pathsep.join(dict.fromkeys(filter(None, entries)))}
        if fork:
            argv.append("--fork")
        self.proc = subprocess.Popen(argv, pass_fds=(request_r, reply_w), stdin=subprocess.DEVNULL, stdout=2, env=env)
        os.close(request_r)
        os.close(reply_w)
        self._replies = os.fdopen(self._reply_r, "rb")

    def reply(self) -> tuple[dict, bytes]:
        """The next reply (logs go to progress on the way); MethodProcessFailed for an error, an ended process or
        a reply that is not one (the method's code writes them: nothing in one is trusted to be well formed)."""
        while True:
            line = self._replies.readline(MAX_HEADER_BYTES)
            if not line:
                code = self.proc.wait()
                raise MethodProcessFailed(f"its process ended without replying (exit status {code})")
            try:
                header = json.loads(line) if line.endswith(b"\n") else None
            except ValueError as exc:
                raise MethodProcessFailed(f"its process replied with something that is not a reply ({exc})") from None
            nbytes = header.get("nbytes", 0) if isinstance(header, dict) else None
            if type(nbytes) is not int or not 0 <= nbytes <= MAX_PAYLOAD_BYTES:
                raise MethodProcessFailed("its process replied with something that is not a reply")
            payload = self._payload(nbytes)
            if "log" in header:
                self.progress.log(str(header["log"]))
                continue
            if "error" in header:
                raise MethodProcessFailed(str(header["error"]))
            return header, payload

    def _payload(self, nbytes: int) -> bytes:
        """The `nbytes` bytes after a reply's header, read a block at a time: memory grows only with what
        the process sends."""
        blocks = []
        while nbytes:
            block = self._replies.read(min(nbytes, BLOCK_BYTES))
            if not block:
                raise MethodProcessFailed("its process ended in the middle of a reply")
            blocks.append(block)
            nbytes -= len(block)
        return b"".join(blocks)

    def request(self, message: dict) -> tuple[np.ndarray, float]:
        """Scores for one request (benchmark/method_child.answer), and the seconds the harness waited for them:
        what the method's process says of its own time is not believed."""
        started = time.perf_counter()
        data = (json.dumps(message) + "\n").encode()
        try:
            _write_all(self._request_w, data)
        except BrokenPipeError:
            pass  # the reply says why
        _, payload = self.reply()
        return scores_of(payload), time.perf_counter() - started

    def close(self) -> None:
        try:
            os.write(self._request_w, b'{"op": "close"}\n')
        except OSError:
            pass
        for closing in (lambda: os.close(self._request_w), self._replies.close):
            try:
                closing()
            except OSError:
                pass
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.owns_folder:
            shutil.rmtree(self.folder, ignore_errors=True)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def scores_of(payload: bytes) -> np.ndarray:
    """The scores of a reply: an .npy payload, never unpickled."""
    import io

    try:
        return np.load(io.BytesIO(payload), allow_pickle=False)
    except Exception as exc:  # noqa: BLE001 - anything unreadable is the method's failure
        raise MethodProcessFailed(f"its scores are not a numeric array ({type(exc).__name__}: {exc})") from None


def modules_for(name: str) -> list[str]:
    """Modules the method process imports before creating `name`: the module of a method registered in this
    process (a plugin imported here, a test's), so that it registers there too. Entry points load there."""
    METHODS._ensure_builtins()
    entry = METHODS._entries.get(name)
    if entry is None or not isinstance(entry.obj, type):
        return []
    module = entry.obj.__module__
    if module == "__main__":
        raise UserError(
            f"method {name} is defined in a script (__main__); put it in a module or package to run it "
            "in its own process"
        )
    return [] if module.split(".")[0] == "methods" else [module]


class IsolatedMethod:
    """A method as the harness holds it when it runs in its own process: what that process described (config,
    version, how it is called). No code of the method runs here."""

    version = 1
    consumes = "images"
    takes_classes = False
    batched = False
    transductive = False

    def __init__(self, name: str, options: dict, description: dict):
        self.name, self.options, self._config = name, dict(options), dict(description["config"])

    def config(self) -> dict:
        return dict(self._config)


def describe_isolated(name: str, options: dict, place: Placement) -> IsolatedMethod:
    """Create `name` with `options` in a sandboxed process and take its description."""
    meta = {"method": name, "options": options, "modules": modules_for(name)}
    process = MethodProcess("describe", meta, handed_folder(meta, None, place), place)
    try:
        header, _ = process.reply()
    except MethodProcessFailed as exc:
        raise UserError(f"method {name} cannot be created in its sandbox: {exc}") from None
    finally:
        process.close()
    version = header.get("version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise UserError(f"method {name}: its class's version must be an integer, got {version!r}")
    if not isinstance(header.get("config"), dict):
        raise UserError(f"method {name}: its process described it without a config (a dict of its options)")
    cls = type(
        f"Isolated[{name}]",
        (IsolatedMethod,),
        {
            "version": version,
            "consumes": str(header.get("consumes", "images")),
            "takes_classes": bool(header.get("takes_classes")),
            "batched": bool(header.get("batched")),
            "transductive": bool(header.get("transductive")),
            "__module__": str(header.get("module", "plugin")),
        },
    )
    return cls(name, options, header)


def settings_meta(name: str, options: dict, backbone: str, image_size: int, seed: int, device: str) -> dict:
    return {
        "method": name,
        "options": options,
        "modules": modules_for(name),
        "backbone": backbone,
        "image_size": int(image_size),
        "seed": int(seed),
        "device": device,
    }


def serving_process(meta: dict, given: Handed, place: Placement, progress: Progress) -> MethodProcess:
    """Prepare (writing the method's cache), then a second process prepared from that cache that answers: under
    isolation, a fresh fork of it per request, with every file system read-only."""
    folder = handed_folder(meta, given, place)  # written once: preparing and serving read the same files
    try:
        if place.isolate:
            started = time.perf_counter()
            preparing = MethodProcess("prepare", meta, folder, place, progress, owns_folder=False)
            try:
                preparing.reply()
            finally:
                preparing.close()
            progress.log(f"{meta['method']}: prepared in its sandbox in {time.perf_counter() - started:.1f} s")
        serving = MethodProcess("serve", meta, folder, place, progress, fork=place.isolate)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    try:
        serving.reply()
    except BaseException:
        serving.close()
        raise
    return serving


def episode_request(blind, i: int, seed: int, batched: bool, takes_classes: bool, alone: bool = False) -> dict:
    """What a method process answers for episode `i` of `blind`; `alone`: fit, then predict each query on its
    own (never batched), for the check that an inductive method's answers do not depend on its other queries."""
    episode = blind.episode(i)
    if batched and not alone:
        return {
            "op": "batch",
            "support": [episode.support_idx.tolist()],
            "query": [episode.query_idx.tolist()],
            "n_way": int(episode.n_way),
            "n_shot": int(blind.n_shot),
        }
    return {
        "op": "episode",
        "support": episode.support_idx.tolist(),
        "support_y": episode.support_y.tolist(),
        "query": episode.query_idx.tolist(),
        "n_way": int(episode.n_way),
        "rng": [int(seed), int(blind.n_shot), int(i), 7919],
        "classes": episode.classes.tolist() if takes_classes else None,
        **({"chunk": 1} if alone else {}),
    }


def fixedk_request(s, k: int, seed: int, n_classes: int, chunk: int, draw_tag: int, test=None) -> dict:
    """What a method process answers for one fixed-K seed (a BlindFixedKSet `s`): fit on its draw, then predict
    `test` (default: the whole test pool) `chunk` rows at a time."""
    return {
        "op": "fixedk",
        "train": s.train_idx.tolist(),
        "train_y": s.train_y.tolist(),
        "test": (s.test_idx if test is None else test).tolist(),
        "n_classes": int(n_classes),
        "chunk": int(chunk),
        "rng": [int(seed), int(k), int(draw_tag), 1],
    }


class SandboxExecutor:
    """`--isolate`: who prepares and answers every method. Each method is prepared in its sandbox and each
    episode (or fixed-K seed) answered by a fresh fork there; the harness holds the query labels and scores."""

    def __init__(self, hidden: list[Path], answered, progress: Progress = SILENT):
        """`answered`: benchmark.runner.Answered, what `answers` yields."""
        self.hidden, self.answered, self.progress = tuple(hidden), answered, progress
        self.process: MethodProcess | None = None
        self.episodes = 0
        self.seconds = 0.0

    def prepare(
        self, method: IsolatedMethod, given: Handed, cache: Path, backbone: str, image_size: int, seed: int, device: str
    ) -> None:
        self.close()
        meta = settings_meta(method.name, method.options, backbone, image_size, seed, device)
        self.process = serving_process(meta, given, Placement(True, cache, self.hidden, device), self.progress)

    def _request(self, message: dict) -> tuple[np.ndarray, float]:
        started = time.perf_counter()
        scores, seconds = self.process.request(message)
        self.episodes += 1
        self.seconds += time.perf_counter() - started
        return scores, seconds

    def answers(self, method, blind, pending, seed, label):
        """benchmark.runner.episode_answers' answers, each episode from a fresh fork of the prepared sandbox."""
        for i in pending:
            where = f" on episode {i}"
            try:
                scores, seconds = self._request(episode_request(blind, i, seed, method.batched, method.takes_classes))
            except MethodProcessFailed as exc:
                raise MethodFailed(label, "predict_batch" if method.batched else "fit or predict", where, exc) from None
            yield self.answered((i,), scores, seconds, method.batched, where)

    def seed_answers(self, answer, method, k, seeds, sets, n_classes, label, draw_tag: int = 0, chunk: int = 4096):
        """benchmark.fixedk.fixed_k_answers' answers, each seed from a fresh fork of the prepared sandbox."""
        out = []
        for seed, s in zip(seeds, sets):
            chunk_size = max(1, len(s.test_idx)) if method.transductive else int(chunk)  # its query: the pool
            scores, seconds = self._request(fixedk_request(s, k, seed, n_classes, chunk_size, draw_tag))
            out.append((int(seed), scores, seconds))
        return out

    def answered_again(self, requests: dict) -> dict:
        """{key: scores} for `requests` ({key: request}), each answered by a fresh fork of the prepared sandbox
        (the check that a method which says it is inductive is)."""
        return {key: self.process.request(request)[0] for key, request in requests.items()}

    def close(self) -> None:
        if self.process is not None:
            self.process.close()
            self.process = None

    def summary(self) -> str:
        self.close()
        rate = self.episodes / max(self.seconds, 1e-9)
        return f"isolated: {self.episodes} answers from fresh sandbox forks at {rate:.1f} per second"


def answered_again(meta: dict, given: Handed, cache: Path, requests: dict, progress: Progress = SILENT) -> dict:
    """{key: scores} for `requests` ({key: request}), answered by a freshly prepared method process (not
    sandboxed) that has seen no other episode: what the method answers from its prepared state alone."""
    process = serving_process(meta, given, Placement(False, cache), progress)
    try:
        return {key: process.request(request)[0] for key, request in requests.items()}
    finally:
        process.close()

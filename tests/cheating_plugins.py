"""Plugins that try to top the leaderboard without learning, as a plugin author who read our code would.

Each answers from something other than the images it is handed, and falls back to a constant answer (class 0,
exactly chance on balanced queries) where its trick finds nothing:
- `cheat-rows`: a query gets the label of the support whose row number (handle) is nearest to it;
- `cheat-paths`: looks for image paths in everything reachable from the context and matches folders;
- `cheat-memory-features` / `cheat-memory-rows`: remember the class of every support image seen in earlier
  episodes, keyed by its features or by its row number, and answer queries seen before from that memory;
- `cheat-manifests`: reads the episode manifests beside the results file (`out=` names it) and finds its
  episode's query layout there;
- `cheat-disk`: re-reads the data set from disk (`data=` names it), ranks its files by digest as the harness
  ranks rows, and answers each query with its folder;
- `cheat-gc`: searches the interpreter's objects for the harness's episode set and row handles;
- `cheat-map-disk` (for `bench craters run`): finds where each window of a map lies from the harness's cache
  or the scene file, and labels it from the crater file that scores the map.
- `cheat-query-stats`: says it is inductive, but reads its query set (centres on the queries' mean), as only a
  method marked transductive may;
- `forged-reply` (under --isolate): rewrites the replies its sandboxed process sends the harness, to claim it
  answered in no time or to break the harness's reading of them.
tests/test_cheating_plugins.py runs them in-process and under --isolate; tests/test_map_isolate.py the last.
"""

from __future__ import annotations

import gc
import glob
import hashlib
import json
import os
import types
import warnings

import numpy as np

from methods.base import FewShotMethod
from methods.registry import register_method


class Cheat(FewShotMethod):
    consumes = "features"

    def prepare(self, ctx):
        self.features = ctx.features()

    def fit(self, support_idx, support_y, n_way, rng, **named):
        self.support_idx, self.support_y, self.n_way = np.asarray(support_idx), np.asarray(support_y), n_way
        self.classes = named.get("classes")

    def constant(self, n: int) -> np.ndarray:
        scores = np.zeros((n, self.n_way), np.float32)
        scores[:, 0] = 1
        return scores

    def one_hot(self, labels) -> np.ndarray:
        return np.eye(self.n_way, dtype=np.float32)[np.asarray(labels, np.int64)]


@register_method("cheat-rows")
class RowNeighbour(Cheat):
    def predict(self, query_idx):
        nearest = np.abs(np.asarray(query_idx)[:, None] - self.support_idx[None, :]).argmin(1)
        return self.one_hot(self.support_y[nearest])


def reachable_strings(roots, limit: int = 200_000) -> list[str]:
    """Every str reachable from roots by attributes, items, closures and our functions' globals."""
    seen, found, stack = set(), [], list(roots)
    while stack and len(seen) < limit:
        obj = stack.pop()
        if id(obj) in seen or isinstance(obj, (types.ModuleType, type(None), int, float, bool, bytes)):
            continue
        seen.add(id(obj))
        if isinstance(obj, str):
            found.append(obj)
            continue
        if isinstance(obj, np.ndarray):
            if obj.dtype == object:
                stack.extend(obj.ravel().tolist())
            continue
        if isinstance(obj, dict):
            stack.extend(obj.keys())
            stack.extend(obj.values())
            continue
        if isinstance(obj, (list, tuple, set, frozenset)):
            stack.extend(obj)
            continue
        if isinstance(obj, types.FunctionType):
            stack.extend(c.cell_contents for c in obj.__closure__ or () if _filled(c))
            if obj.__module__ and obj.__module__.split(".")[0] in ("methods", "benchmark", "tasks", "common"):
                stack.append({k: v for k, v in obj.__globals__.items() if not k.startswith("__")})
        if isinstance(obj, types.MethodType):
            stack.extend([obj.__self__, obj.__func__])
        for name in dir(type(obj)):
            member = getattr(type(obj), name, None)
            if isinstance(member, property) and name not in ("T", "mT", "real", "imag"):
                try:
                    stack.append(getattr(obj, name))
                except Exception:
                    pass
        try:
            stack.extend(vars(obj).values())
        except TypeError:
            pass
    return found


def _filled(cell) -> bool:
    try:
        cell.cell_contents  # noqa: B018 (reading an empty cell raises: that is the test)
    except ValueError:
        return False
    return True


@register_method("cheat-paths")
class PathReader(Cheat):
    def prepare(self, ctx):
        super().prepare(ctx)
        paths = [s for s in reachable_strings([ctx, self]) if os.path.isfile(s)]
        # a list of one path per row, as the context once kept them, read in the order the rows are numbered
        self.folders = [os.path.basename(os.path.dirname(p)) for p in paths] if len(paths) == ctx.n_rows else None

    def predict(self, query_idx):
        if self.folders is None:
            return self.constant(len(query_idx))
        known = {self.folders[s]: y for s, y in zip(self.support_idx, self.support_y)}
        return self.one_hot([known.get(self.folders[q], 0) for q in query_idx])


MEMORY: dict = {}  # module-global: survives a fresh instance of the method in the same process


class Memory(Cheat):
    takes_classes = True

    def key(self, i):
        raise NotImplementedError

    def fit(self, support_idx, support_y, n_way, rng, **named):
        super().fit(support_idx, support_y, n_way, rng, **named)
        for i, y in zip(self.support_idx, self.support_y):
            MEMORY[self.key(i)] = int(self.classes[y])

    def predict(self, query_idx):
        position = {int(c): j for j, c in enumerate(self.classes)}
        return self.one_hot([position.get(MEMORY.get(self.key(q)), 0) for q in query_idx])


@register_method("cheat-memory-features")
class FeatureMemory(Memory):
    def key(self, i):
        return ("features", hashlib.sha256(self.features[int(i)].tobytes()).hexdigest())


@register_method("cheat-memory-rows")
class RowMemory(Memory):
    def key(self, i):
        return ("row", int(i))


@register_method("cheat-manifests")
class ManifestReader(Cheat):
    """Finds its episode in the manifests beside the results file by its support rows (taking the rows it is
    handed for table rows) and answers from the query layout there (class by class)."""

    def __init__(self, out: str = ""):
        self.out = out

    def predict(self, query_idx):
        for path in glob.glob(os.path.join(os.path.dirname(self.out) or ".", "manifests", "*.npz")):
            try:
                with np.load(path, allow_pickle=False) as z:
                    support, query = z["support"], z["query"]
            except (OSError, ValueError, KeyError):
                continue
            match = (
                np.flatnonzero((support == self.support_idx[None, :]).all(1))
                if support.shape[1:] == self.support_idx.shape
                else []
            )
            if len(match):
                layout = query[match[0]]
                per_class = len(layout) // self.n_way
                label = {int(r): j // per_class for j, r in enumerate(layout)}
                return self.one_hot([label.get(int(q), 0) for q in query_idx])
        return self.constant(len(query_idx))


@register_method("cheat-disk")
class DiskReader(Cheat):
    """Re-reads the data set (`data=`), ranks its files by SHA-256 as the harness ranks rows into handles, and
    answers each query with the folder its file lies in."""

    def __init__(self, data: str = ""):
        self.data = data

    def prepare(self, ctx):
        super().prepare(ctx)
        files = sorted(glob.glob(os.path.join(self.data, "*", "*")))
        ranked = []
        for path in files:
            try:
                with open(path, "rb") as f:
                    ranked.append((hashlib.sha256(f.read()).hexdigest(), os.path.basename(os.path.dirname(path))))
            except OSError:
                pass
        ranked.sort()
        self.folders = [folder for _, folder in ranked] if len(ranked) == ctx.n_rows else None

    predict = PathReader.predict


@register_method("cheat-gc")
class GarbageSearcher(Cheat):
    """Finds the harness's episode sets and row handles among the interpreter's objects and reads the query
    layout of its episode there."""

    def predict(self, query_idx):
        from tasks.episodes import EpisodeSet

        try:
            from tasks.handles import RowHandles
        except ImportError:  # a harness that numbers rows by table order
            RowHandles = type(None)

        with warnings.catch_warnings():  # isinstance() on every object wakes deprecated torch aliases
            warnings.simplefilter("ignore")
            objects = [o for o in gc.get_objects() if isinstance(o, (RowHandles, EpisodeSet))]
        handles = [o for o in objects if isinstance(o, RowHandles) and len(o) == len(self.features)]
        for episodes in (o for o in objects if isinstance(o, EpisodeSet)):
            for handle_map in handles or [None]:
                support = episodes.support if handle_map is None else handle_map.of_rows(episodes.support)
                match = (
                    np.flatnonzero((support == self.support_idx[None, :]).all(1))
                    if support.shape[1:] == self.support_idx.shape
                    else []
                )
                if len(match):
                    layout = episodes.query[match[0]]
                    if handle_map is not None:
                        layout = handle_map.of_rows(layout)
                    label = {int(r): j // episodes.n_query for j, r in enumerate(layout)}
                    return self.one_hot([label.get(int(q), 0) for q in query_idx])
        return self.constant(len(query_idx))


@register_method("sandbox-prober")
class SandboxProber(Cheat):
    """Fails, naming what it reached: any of `paths` (separated by `|`) that exists, a network interface other
    than loopback, an environment variable of the harness, or a file an earlier episode wrote."""

    def __init__(self, paths: str = ""):
        self.paths = [p for p in paths.split("|") if p]

    def prepare(self, ctx):
        super().prepare(ctx)
        import socket

        reached = [p for p in self.paths if os.path.exists(p)]
        reached += [name for name in ("BENCH_DATA_DIR", "BENCH_CACHE_DIR") if name in os.environ]
        reached += [f"network interface {name}" for _, name in socket.if_nameindex() if name != "lo"]
        if reached:
            raise RuntimeError("reached " + ", ".join(reached))
        self.note = f"/tmp/marsfsl-left-behind-{os.getpid()}"

    def predict(self, query_idx):
        if os.path.exists(self.note):
            raise RuntimeError("a file written by an earlier episode is still there")
        try:
            with open(self.note, "w") as f:
                f.write("x")
        except OSError:
            pass
        return self.constant(len(query_idx))


@register_method("cheat-memory-shm")
class SharedMemory(FeatureMemory):
    """Remembers supports, keyed by features, in System V shared memory: a segment outlives the process (and
    the fork) that wrote it."""

    KEY, SIZE = 0x6D617273, 1 << 20

    @classmethod
    def segment(cls):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.shmat.restype = ctypes.c_void_p
        shmid = libc.shmget(cls.KEY, cls.SIZE, 0o1000 | 0o600)  # IPC_CREAT
        address = libc.shmat(shmid, None, 0) if shmid >= 0 else None
        return None if address in (None, ctypes.c_void_p(-1).value) else address

    def shared(self) -> dict:
        import ctypes
        import json

        address = self.segment()
        raw = ctypes.string_at(address, self.SIZE).split(b"\0", 1)[0] if address else b""
        return json.loads(raw) if raw else {}

    def fit(self, support_idx, support_y, n_way, rng, **named):
        import ctypes
        import json

        Cheat.fit(self, support_idx, support_y, n_way, rng, **named)
        memory = self.shared()
        memory.update({self.key(i)[1]: int(self.classes[y]) for i, y in zip(self.support_idx, self.support_y)})
        address = self.segment()
        if address:
            data = json.dumps(memory).encode()[: self.SIZE - 1] + b"\0"
            ctypes.memmove(address, data, len(data))

    def predict(self, query_idx):
        memory, position = self.shared(), {int(c): j for j, c in enumerate(self.classes)}
        return self.one_hot([position.get(memory.get(self.key(q)[1]), 0) for q in query_idx])

    @classmethod
    def remove(cls) -> None:
        """Remove the segment from this machine (tests clean up after an in-process run)."""
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        shmid = libc.shmget(cls.KEY, cls.SIZE, 0o600)
        if shmid >= 0:
            libc.shmctl(shmid, 0, None)


@register_method("cheat-map-disk")
class MapFromDisk(Cheat):
    """Maps the CTX craters from files on disk, not from pixels. Where each window handle lies (its grid
    position): from the harness's cache (`cache=`: its grid-order `map-features` entries, matched row by row
    against the handed features), or from the scene file (`scene=`: its windows cropped as the harness crops
    them, matched against the handed pixels). Each window's class: from the Robbins crater file that scores the
    map (`truth=`). Without both, the constant answer."""

    consumes = "both"

    def __init__(self, truth: str = "", cache: str = "", scene: str = "", window: int = 64, stride: int = 32):
        self.truth, self.cache, self.scene, self.window, self.stride = truth, cache, scene, int(window), int(stride)

    def prepare(self, ctx):
        from tasks.windows import WindowGrid

        super().prepare(ctx)
        self.grid = WindowGrid(3744, 3744, self.window, self.stride)  # the CTX block
        self.where = self.from_cache() or self.from_scene(ctx)  # {handle: grid position}
        self.crater = None
        if self.where and os.path.isfile(self.truth):
            from tasks.datasets.ctx_murray import window_truth

            self.crater, _ = window_truth(self.grid, np.loadtxt(self.truth, ndmin=2))

    def from_cache(self) -> dict:
        rows = {row.tobytes(): h for h, row in enumerate(self.features)}
        for path in glob.glob(os.path.join(self.cache, "**", "map-features", "*.npy"), recursive=True):
            grid_order = np.load(path)
            if len(grid_order) == self.grid.n:
                where = {rows[row.tobytes()]: g for g, row in enumerate(grid_order) if row.tobytes() in rows}
                if len(where) == self.grid.n:
                    return where
        return {}

    def from_scene(self, ctx) -> dict:
        if not os.path.isfile(self.scene):
            return {}
        from benchmark.mapping.scene import load_scene

        scene, images = load_scene(self.scene), ctx.images()
        rows = {images[h].tobytes(): h for h in range(len(images))}
        x0, y0 = self.grid.origins()
        crops = (scene.window(int(x), int(y), self.window, ctx.image_size).tobytes() for x, y in zip(x0, y0))
        return {rows[crop]: g for g, crop in enumerate(crops) if crop in rows}

    def predict(self, query_idx):
        if self.crater is None:
            return self.constant(len(query_idx))
        from tasks.datasets.ctx_murray import CLASSES

        crater = self.crater[[self.where[int(q)] for q in query_idx]]
        return self.one_hot(np.where(crater, CLASSES.index("crater"), 1 - CLASSES.index("crater")))


@register_method("forged-reply")
class ForgedReply(Cheat):
    """Answers the constant, but rewrites every reply header its sandboxed process sends (its code runs there, so
    it can): `forge=fast` claims zero seconds, `garbage` puts a list where the seconds go, `huge` declares a
    payload of a petabyte. In-process there is no reply to forge; it only answers."""

    def __init__(self, forge: str = "fast"):
        self.forge = forge

    def prepare(self, ctx):
        super().prepare(ctx)
        import sys

        child = sys.modules.get("__main__")
        if getattr(getattr(child, "__spec__", None), "name", None) != "benchmark.method_child":
            return
        send, forge = child.Channel.send, self.forge

        def forged(channel, message, payload=b""):
            if "error" in message or "log" in message:
                return send(channel, message, payload)
            message = {**message, "seconds": {"fast": 0.0, "garbage": [1]}.get(forge, message.get("seconds"))}
            if forge != "huge":
                return send(channel, message, payload)
            header = json.dumps({**message, "nbytes": 1 << 50}) + "\n"
            view = memoryview(header.encode() + payload)
            while view:
                view = view[os.write(channel.fd_out, view) :]

        child.Channel.send = forged

    def predict(self, query_idx):
        return self.constant(len(query_idx))


REPLAYED: dict = {}  # module-global: the scores cheat-query-stats:replay=True gave, by support and query row


@register_method("cheat-query-stats")
class QueryStatistics(Cheat):
    """Nearest prototype by cosine similarity after centring the prototypes and the queries on the mean of the
    query set it is asked: a transductive method (its scores depend on which other queries it sees) that does
    not say so, and would stand among the inductive ones. `replay=True`: a query asked alone whose scores it
    gave before, with the same support, gets those scores again (to pass a check that asks one at a time)."""

    def __init__(self, replay: bool = False):
        self.replay = replay

    def fit(self, support_idx, support_y, n_way, rng, **named):
        super().fit(support_idx, support_y, n_way, rng, **named)
        x = self.features[self.support_idx]
        self.prototypes = np.stack([x[self.support_y == c].mean(0) for c in range(n_way)])

    def predict(self, query_idx):
        x = self.features[np.asarray(query_idx)]
        centre = x.mean(0)
        q, p = x - centre, self.prototypes - centre
        q = q / (np.linalg.norm(q, axis=1, keepdims=True) + 1e-6)
        p = p / (np.linalg.norm(p, axis=1, keepdims=True) + 1e-6)
        scores = (q @ p.T).astype(np.float32)
        if self.replay:
            support = tuple(self.support_idx.tolist())
            if len(query_idx) == 1 and (support, int(query_idx[0])) in REPLAYED:
                return REPLAYED[(support, int(query_idx[0]))][None]
            REPLAYED.update({(support, int(i)): row for i, row in zip(query_idx, scores)})
        return scores

"""The process a method runs in when it is kept apart from the harness (benchmark/sandbox.py).

`python -m benchmark.method_child PHASE FOLDER IN OUT [--fork]`: FOLDER holds what the harness hands over
(`handed.json` and the arrays of methods.base.Handed, in handle order), IN and OUT are the file descriptors of
the harness's pipes. Requests are JSON lines on IN; every reply on OUT is a JSON line, followed for scores by
an .npy payload of the size the line gives. The child never receives a label of a query row, a path or a name
of the data; it answers with scores, which the harness checks and scores itself.

Phases: `describe` creates the method and replies with what the harness keys rows on (config, version) and
how it calls it; `prepare` also prepares it (writing its cache) and exits; `serve` prepares it again (reading
its cache) and answers requests until told to stop. With `--fork`, every request is answered by a fresh fork of
the prepared process, so no state survives from one episode to the next.
"""

from __future__ import annotations

import io
import json
import os
import sys

import numpy as np

# what a method raised, in the words MethodFailed uses in-process: the harness quotes it after the method's name
from benchmark.scoring import describe as describe_failure


class Channel:
    def __init__(self, fd_in: int, fd_out: int):
        self.reader = os.fdopen(fd_in, "rb", buffering=0)
        self.fd_out = fd_out

    def send(self, message: dict, payload: bytes = b"") -> None:
        data = (json.dumps({**message, "nbytes": len(payload)}) + "\n").encode() + payload
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd_out, view) :]

    def receive(self) -> dict | None:
        line = b""
        while not line.endswith(b"\n"):
            chunk = self.reader.read(1)
            if not chunk:
                return None
            line += chunk
        return json.loads(line)


def load_handed(folder: str):
    from methods.base import Handed
    from methods.concat import ConcatRows

    with open(os.path.join(folder, "handed.json")) as f:
        meta = json.load(f)
    arrays, parts = {}, meta.get("parts", {})
    for name in ("base", "base_labels", "base_groups", "episode_classes", "features", "images"):
        path = os.path.join(folder, f"{name}.npy")
        if name in parts:  # rows in parts (a map's windows after the base task's): memory maps, never copied
            arrays[name] = ConcatRows(
                [
                    np.load(os.path.join(folder, f"{name}.{i}.npy"), mmap_mode="r", allow_pickle=False)
                    for i in range(parts[name])
                ]
            )
        elif os.path.exists(path):
            arrays[name] = np.load(path, mmap_mode="r", allow_pickle=False)
    arrays["base_groups"] = np.asarray(arrays["base_groups"]).astype(object)
    given = Handed(task_key=meta["task_key"], n_rows=meta["n_rows"], keys=meta["keys"], **arrays)
    return meta, given


def make_method(meta: dict):
    import importlib

    from methods.registry import create_method

    for module in meta.get("modules", []):
        importlib.import_module(module)
    return create_method(meta["method"], **meta["options"])


def describe(method) -> dict:
    from methods.base import BatchedMethod

    cls = type(method)
    return {
        "config": method.config(),
        "version": getattr(cls, "version", 1),
        "consumes": getattr(cls, "consumes", "images"),
        "takes_classes": bool(getattr(cls, "takes_classes", False)),
        "batched": isinstance(method, BatchedMethod),
        "transductive": bool(getattr(cls, "transductive", False)),
        "module": cls.__module__,
    }


def prepared_method(meta: dict, given, cache_dir: str, channel: Channel, writable: bool):
    import torch

    from methods.base import Context
    from methods.cache import Cache
    from methods.progress import Progress

    class Forwarded(Progress):
        def log(self, message: str) -> None:
            channel.send({"log": str(message)})

    cache = Cache(cache_dir)
    cache.writable = writable  # serving reads what preparing wrote; nothing it writes could outlive a fork
    method = make_method(meta)
    ctx = Context.of(
        given,
        cache,
        backbone=meta["backbone"],
        image_size=meta["image_size"],
        seed=meta["seed"],
        progress=Forwarded(),
        device=torch.device(meta["device"]),
    )
    method.prepare(ctx)
    return method


def scores_payload(scores) -> bytes:
    if hasattr(scores, "detach"):
        scores = scores.detach().cpu().numpy()
    array = np.asarray(scores)
    if array.dtype == object:
        raise TypeError(f"scores must be numbers, got an array of {array.dtype}")
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def answer(method, request: dict):
    """Scores for one request, as the harness's local loop would compute them."""
    import torch

    op = request["op"]
    if op == "episode":
        named = {"classes": np.asarray(request["classes"], np.int64)} if request.get("classes") is not None else {}
        method.fit(
            np.asarray(request["support"], np.int64),
            np.asarray(request["support_y"], np.int64),
            int(request["n_way"]),
            np.random.default_rng(request["rng"]),
            **named,
        )
        query = np.asarray(request["query"], np.int64)
        # "chunk": 1 asks each query on its own (the harness's check that an inductive method is one)
        return predicted(method, query, request["chunk"]) if request.get("chunk") else method.predict(query)
    if op == "batch":
        from methods.devices import CPU, to_numpy

        device = getattr(method, "device", None) or CPU
        support = torch.as_tensor(np.asarray(request["support"], np.int64)).to(device)
        query = torch.as_tensor(np.asarray(request["query"], np.int64)).to(device)
        n_way, n_shot = int(request["n_way"]), int(request["n_shot"])
        support_y = torch.arange(n_way, device=device).repeat_interleave(n_shot).expand(len(support), -1)
        with torch.inference_mode():
            return to_numpy(method.predict_batch(support, support_y, query, n_way).float())
    if op in ("fixedk", "map"):  # fit once, then the test rows (a map's windows) a chunk at a time
        method.fit(
            np.asarray(request["train"], np.int64),
            np.asarray(request["train_y"], np.int64),
            int(request["n_classes"]),
            np.random.default_rng(request["rng"]),
        )
        return predicted(method, np.asarray(request["test"], np.int64), request["chunk"])
    raise ValueError(f"unknown request {op!r}")


def predicted(method, rows: np.ndarray, chunk) -> np.ndarray:
    """The method's scores for `rows`, asked `chunk` rows at a time, in order."""
    chunk = int(chunk)
    return np.concatenate([np.asarray(method.predict(rows[i : i + chunk])) for i in range(0, len(rows), chunk)])


def reply_to(method, request: dict, channel: Channel) -> None:
    """Scores, or the method's failure; the harness times the request itself (it believes no claim of ours)."""
    try:
        payload = scores_payload(answer(method, request))
    except BaseException as exc:  # noqa: BLE001 - whatever the method raises is its failure, reported as such
        channel.send({"error": describe_failure(exc)})
        return
    channel.send({}, payload)


def answered_in_fork(method, request: dict, channel: Channel) -> None:
    """The reply of a fresh fork of this prepared process: it writes its reply to a pipe of its own and exits,
    so whatever it learnt goes with it."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        try:
            for fd in (channel.reader.fileno(), channel.fd_out):  # the harness's pipes stay the server's
                os.close(fd)
            reply_to(method, request, Channel(os.open(os.devnull, os.O_RDONLY), write_end))
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        data = pipe.read()
    _, status = os.waitpid(pid, 0)
    sweep()
    if not data:
        channel.send({"error": f"the method's process ended without answering (wait status {status})"})
        return
    view = memoryview(data)
    while view:
        view = view[os.write(channel.fd_out, view) :]


def sweep() -> None:
    """After an episode's fork: nothing it started or left in the sandbox's shared kernel state survives for the
    next one. Every other process of the sandbox is killed (a daemon the fork left), and its System V shared
    memory, semaphores and message queues and its POSIX message queues are removed (the file systems are
    read-only; these are the sandbox's own namespaces)."""
    import ctypes
    import signal

    try:
        with open("/proc/1/comm") as f:
            sandboxed = f.read().strip() == "bwrap"  # this process's own PID namespace, under bubblewrap's init
    except OSError:
        sandboxed = False
    mine = {os.getpid(), os.getppid(), 1}
    for name in os.listdir("/proc") if sandboxed else ():
        if name.isdigit() and int(name) not in mine:
            try:
                os.kill(int(name), signal.SIGKILL)
            except OSError:
                pass
    libc = ctypes.CDLL(None, use_errno=True)
    for table, remove in (("shm", libc.shmctl), ("sem", libc.semctl), ("msg", libc.msgctl)):
        try:
            with open(f"/proc/sysvipc/{table}") as f:
                ids = [int(line.split()[1]) for line in f.readlines()[1:] if line.strip()]
        except OSError:
            ids = []
        for ipc_id in ids:  # IPC_RMID = 0; semctl takes a semaphore number before it
            remove(ipc_id, 0, 0) if table == "sem" else remove(ipc_id, 0, None)
    if os.path.isdir("/dev/mqueue"):
        for name in os.listdir("/dev/mqueue"):
            try:
                os.unlink(os.path.join("/dev/mqueue", name))
            except OSError:
                pass


def seal(channel: Channel) -> None:
    """Before serving forks: nothing the method left behind may carry what one fork learnt to the next. Close
    every file descriptor but the harness's pipes and the standard streams, refuse threads it left running, and
    make this process undumpable, so that a fork cannot read or write its parent's memory."""
    import threading

    keep = {0, 1, 2, channel.reader.fileno(), channel.fd_out}
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd not in keep:
            try:
                os.close(fd)
            except OSError:
                pass
    if threading.active_count() > 1:
        raise RuntimeError("prepare left threads running; a sandboxed method must not run threads between episodes")
    try:
        import ctypes

        ctypes.CDLL(None).prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE = 4
    except (OSError, AttributeError):
        pass


def serve(method, channel: Channel, fork: bool) -> None:
    if fork:
        seal(channel)
    while (request := channel.receive()) is not None and request.get("op") != "close":
        (answered_in_fork if fork else reply_to)(method, request, channel)


def main(argv: list[str]) -> int:
    phase, folder, fd_in, fd_out = argv[0], argv[1], int(argv[2]), int(argv[3])
    fork = "--fork" in argv[4:]
    channel = Channel(fd_in, fd_out)
    try:
        import torch

        torch.set_num_threads(1)  # the local executor's threading: the same bits
        with open(os.path.join(folder, "handed.json")) as f:
            meta = json.load(f)
        if phase == "describe":
            channel.send(describe(make_method(meta)))
            return 0
        _, given = load_handed(folder)
        method = prepared_method(meta, given, meta["cache"], channel, writable=phase == "prepare")
        channel.send({"prepared": True})
        if phase == "serve":
            serve(method, channel, fork)
    except BaseException as exc:  # noqa: BLE001 - reported to the harness, which names the method
        try:
            channel.send({"error": describe_failure(exc)})
        except OSError:
            pass
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""--device plumbing, proven on the CPU (these machines have no accelerator): every module a network method
uses is sent to the device object the Context carries, every tensor sent anywhere goes there, scores come back
as numpy; a batch left on another device raises instead of running silently; CPU cache keys are unchanged;
an unavailable device is a one-line error; rows record the device."""

import numpy as np
import pytest
import torch
from torch import nn

from benchmark.cli import main
from common.errors import UserError
from methods.devices import CPU, device_key, resolve_device
from methods.features import features_key
from methods.registry import create_method
from tests.fakes_methods import make_context, make_task
from tests.test_methods import FAST_OPTIONS

NETWORK_METHODS = [
    *"sdft sdft-no-step1 sdft-linear-head finetune maml protonet:metatrain baseline-pp simpleshot knn".split()
]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("devices")
    return make_task(root / "data"), root / "cache"


def _device_of(args, kwargs):
    for a in list(args) + [kwargs.get("device")]:
        if isinstance(a, (torch.device, str)) and not isinstance(a, bool):
            try:
                return torch.device(a)
            except (RuntimeError, TypeError):
                continue
    return None


@pytest.fixture
def recorder(monkeypatch):
    """Records every device that a module or tensor is sent to, and which modules were sent."""
    sent, moved = [], set()
    module_to, tensor_to = nn.Module.to, torch.Tensor.to

    def record_module(self, *args, **kwargs):
        device = _device_of(args, kwargs)
        if device is not None:
            sent.append(device)
            moved.update(id(m) for m in self.modules())
        return module_to(self, *args, **kwargs)

    def record_tensor(self, *args, **kwargs):
        device = _device_of(args, kwargs)
        if device is not None:
            sent.append(device)
        return tensor_to(self, *args, **kwargs)

    monkeypatch.setattr(nn.Module, "to", record_module)
    monkeypatch.setattr(torch.Tensor, "to", record_tensor)
    return sent, moved


def method_modules(method) -> list[tuple[str, nn.Module]]:
    return [(name, value) for name, value in vars(method).items() if isinstance(value, nn.Module)]


def make(spec: str):
    name, _, flag = spec.partition(":")
    options = dict(FAST_OPTIONS.get(name, {}))
    if flag == "metatrain":
        options.update(metatrain=True, steps=20, train_way=3, train_shots=2, train_queries=2)
    return create_method(name, **options)


@pytest.mark.parametrize("spec", NETWORK_METHODS)
def test_every_network_method_sends_its_modules_and_tensors_to_the_context_device(tiny, tmp_path, recorder, spec):
    task, _ = tiny
    device = torch.device("cpu")  # an explicit device object, as --device resolves it
    method = make(spec)
    ctx = make_context(task, tmp_path / "cache", device=device)  # a cold cache: every compute path runs
    method.prepare(ctx)
    episode = task.episodes(3, 2, 2, 1, seed=0).episode(0)
    method.fit(episode.support_idx, episode.support_y, episode.n_way, np.random.default_rng(0))
    scores = method.predict(episode.query_idx)
    sent, moved = recorder
    assert isinstance(scores, np.ndarray) and scores.shape == (len(episode.query_idx), episode.n_way)
    assert sent, f"{spec} sent nothing to the device"
    assert all(d == device for d in sent), f"{spec} sent something elsewhere: {set(sent)}"
    assert getattr(method, "device", None) == device
    unmoved = [name for name, module in method_modules(method) if id(module) not in moved]
    assert not unmoved, f"{spec} never sent these modules to the device: {unmoved}"
    for name, value in vars(method).items():
        if isinstance(value, torch.Tensor):
            assert value.device == device, name


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_a_batch_left_on_another_device_raises(tiny, tmp_path):
    """Torch refuses a convolution whose weights and input are on different devices; the meta device stands in
    for an accelerator. So a method that left one batch behind fails on a real GPU, never runs silently."""
    task, _ = tiny
    ctx = make_context(task, tmp_path / "cache")
    episode = task.episodes(3, 2, 2, 1, seed=0).episode(0)
    for name in ("sdft-no-step1", "finetune"):
        method = make(name)
        method.prepare(ctx)
        (method.top if name.startswith("sdft") else method.model).to("meta")  # the model moved, the batch not
        method.device = CPU
        with pytest.raises((RuntimeError, NotImplementedError)):
            method.fit(episode.support_idx, episode.support_y, episode.n_way, np.random.default_rng(0))
            method.predict(episode.query_idx)


def test_cpu_cache_keys_are_those_from_before_devices(tiny):
    task, _ = tiny
    assert device_key(CPU) == () and device_key(torch.device("cpu")) == ()
    assert features_key(task.table, "efficientnet_lite0", 32) == features_key(task.table, "efficientnet_lite0", 32, CPU)
    assert features_key(task.table, "efficientnet_lite0", 32, torch.device("meta")) != features_key(
        task.table, "efficientnet_lite0", 32
    )


def test_devices_resolve_or_fail_in_one_line(monkeypatch):
    assert resolve_device("cpu") == CPU and resolve_device(" CPU ") == CPU
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") in (CPU, torch.device("mps"))
    for bad in ("cuda", "cuda:3", "gpu", "tpu:0"):
        with pytest.raises(UserError) as exc:
            resolve_device(bad)
        assert "\n" not in str(exc.value) and "--device" in str(exc.value)


def test_cli_refuses_an_unavailable_device_before_any_work(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    code = main(
        [
            *"run --method protonet --task".split(),
            "folder:" + str(tmp_path),
            "--device",
            "cuda:1",
            "--out",
            str(tmp_path / "r.csv"),
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0 and "--device cuda:1" in err
    assert not (tmp_path / "r.csv").exists()


@pytest.mark.parametrize("command", ["run", "fixedk", "map", "perf"])
def test_every_network_command_takes_device(command, capsys):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    assert "--device" in capsys.readouterr().out


def test_craters_run_takes_device(capsys):
    with pytest.raises(SystemExit):
        main(["craters", "run", "--help"])
    assert "--device" in capsys.readouterr().out


@pytest.mark.parametrize(
    "name, dropped, version",
    [
        ("hirise-regions.csv", ("weights", "transductive", "isolated"), 3),
        ("hirise-regions.csv", ("device", "weights", "transductive", "isolated"), 2),
    ],
)
def test_migrate_adds_device_cpu_and_keeps_every_other_byte(tmp_path, name, dropped, version):
    """A file from before --device (schema 2) or before the weights' digest (3) becomes the shipped file: the
    same lines plus device=cpu, the built-in backbone's digest and transductive=0. (Crater-score files of
    schemas 1-3 need stated facts: tests/test_crater_rows.py.)"""
    import csv
    import io
    from pathlib import Path

    from benchmark.commands.migrate import migrate_file

    shipped = (Path(__file__).resolve().parents[1] / "results" / name).read_text().splitlines(keepends=True)
    current = shipped[:1] + shipped[1:6]
    reader = list(csv.DictReader(io.StringIO("".join(current))))
    old_columns = [c for c in reader[0] if c not in dropped]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=old_columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in reader:
        assert row["device"] == "cpu" and row["source"] == "" and row["transductive"] == "0"
        if "schema" in row:
            row["schema"] = str(version)
        writer.writerow(row)
    path = tmp_path / name
    path.write_text(buf.getvalue())
    from benchmark.results import EPISODES, read_results

    with pytest.raises(UserError, match="bench migrate") as exc:
        read_results(path, EPISODES)
    assert "\n" not in str(exc.value) and f"has schema {version}," in str(exc.value)
    assert "weights" in str(exc.value)
    assert f"migrated from schema {version} " in migrate_file(path, tmp_path / "no-data-needed")
    assert path.read_text() == "".join(current)
    assert "already current" in migrate_file(path, tmp_path / "no-data-needed")

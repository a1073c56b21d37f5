"""The example plugin (examples/plugin) installs as its own package and runs through `bench`, unedited suite."""

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
PLUGIN = ROOT / "examples" / "plugin"
BENCH = Path(sys.executable).parent / "bench"


def load_plugin_module():
    sys.path.insert(0, str(PLUGIN))
    try:
        import marsfsl_ridge
    finally:
        sys.path.remove(str(PLUGIN))
    return marsfsl_ridge


def test_ridge_solves_the_regularised_least_squares_problem():
    ridge = load_plugin_module().RidgeProbe(alpha=0.5)
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(12, 40, generator=gen), torch.arange(3).repeat(4)
    ridge.fit_features(x, y, 3, np.random.default_rng(0))
    # Primal solution with an unpenalised intercept, computed independently (numpy, d x d system).
    xn = (x / x.norm(dim=1, keepdim=True)).double().numpy()
    t = np.eye(3)[y.numpy()]
    xc, tc = xn - xn.mean(0), t - t.mean(0)
    w = np.linalg.solve(xc.T @ xc + 0.5 * np.eye(40), xc.T @ tc)
    expected = (xn - xn.mean(0)) @ w + t.mean(0)
    assert np.allclose(ridge.predict_features(x).numpy(), expected, atol=1e-5)
    assert (ridge.predict_features(x).argmax(1) == y).all()  # 12 points in 40 dims: the support is fitted


def test_ridge_rejects_a_non_positive_alpha():
    with pytest.raises(ValueError, match="alpha"):
        load_plugin_module().RidgeProbe(alpha=0)


def make_folder(root: Path, n_classes=3, per_class=10, size=32):
    rng = np.random.default_rng(0)
    for c in range(n_classes):
        (root / f"class{c}").mkdir(parents=True)
        for i in range(per_class):
            img = rng.integers(0, 60, (size, size, 3)).astype(np.uint8)
            img[:, :, c] += 150
            Image.fromarray(img).save(root / f"class{c}" / f"{i}.png")


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """marsfsl-ridge installed (not editable) into its own folder, used through PYTHONPATH by subprocesses only:
    the test venv is left as it was."""
    tmp = tmp_path_factory.mktemp("plugin")
    source = tmp / "src"
    shutil.copytree(PLUGIN, source)  # the build writes egg-info/build folders into the source: not into the repo
    target = tmp / "site"
    out = subprocess.run(
        [
            sys.executable,
            *"-m pip install -q --no-deps --no-build-isolation --no-index --target".split(),
            str(target),
            str(source),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert list(target.glob("marsfsl_ridge-*.dist-info/entry_points.txt"))
    return target


def bench(*args, plugin_dir=None, cwd=None):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(OMP_NUM_THREADS="1", COLUMNS="200")
    if plugin_dir:
        env["PYTHONPATH"] = str(plugin_dir)
    return subprocess.run([str(BENCH), *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=600)


def test_plugin_is_listed_with_its_origin_only_when_installed(installed):
    listed = bench("list", plugin_dir=installed)
    assert listed.returncode == 0, listed.stderr
    line = next(row for row in listed.stdout.splitlines() if " ridge " in row)
    assert "plugin marsfsl-ridge" in line and "Ridge regression" in line and "features" in line
    assert "protonet" in listed.stdout  # built-ins still there
    plain = bench("list")
    assert plain.returncode == 0 and " ridge " not in plain.stdout


def test_plugin_runs_through_bench_run(installed, tmp_path):
    data = tmp_path / "data"
    make_folder(data)
    out = tmp_path / "results.csv"
    run = bench(
        "run",
        "--method",
        "ridge",
        "--method",
        "ridge:alpha=10",
        "--task",
        f"folder:{data}",
        "--shots",
        "1",
        "--ways",
        "3",
        "--queries",
        "2",
        "--episodes",
        "4",
        "--image-size",
        "32",
        "--quiet",
        "--cache-dir",
        str(tmp_path / "cache"),
        "--out",
        str(out),
        plugin_dir=installed,
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert sorted({r["method"] for r in rows}) == ["ridge", "ridge:alpha=10"]
    assert len(rows) == 8 and {r["episode"] for r in rows} == {"0", "1", "2", "3"}
    assert all(0 <= float(r["accuracy"]) <= 1 and r["n_query"] == "6" for r in rows)
    assert {r["config"] for r in rows} == {'{"alpha": 1.0}', '{"alpha": 10.0}'}
    # Without the plugin on the path the same command names the method as unknown, in one line.
    missing = bench("run", "--method", "ridge", "--task", f"folder:{data}", "--out", str(out), cwd=tmp_path)
    assert missing.returncode == 2 and missing.stderr.startswith("error: unknown method 'ridge'")


def test_a_plugin_cannot_take_a_built_in_name(tmp_path):
    """A distribution whose entry point is named `protonet` is reported as broken; the built-in stays."""
    site = tmp_path / "site"
    (site / "evil_pkg").mkdir(parents=True)
    (site / "evil_pkg" / "__init__.py").write_text(
        "from methods.base import FeatureMethod\n\nclass Evil(FeatureMethod):\n    'Impostor.'\n"
    )
    info = site / "evil_pkg-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: evil-pkg\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[marsfsl.methods]\nprotonet = evil_pkg:Evil\n")
    listed = bench("list", plugin_dir=site)
    assert listed.returncode == 0, listed.stderr
    line = next(row for row in listed.stdout.splitlines() if " protonet " in row)
    assert "marsfsl" in line and "Impostor" not in line
    assert "broken plugin" in listed.stdout and "already taken by marsfsl" in listed.stdout.replace("\n", " ")

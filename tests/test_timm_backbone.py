"""Any timm architecture as the backbone: `--backbone timm:NAME --weights FILE`, on a generated task with small
timm models whose random weights the tests save themselves (nothing is downloaded)."""

import csv
import shutil

import pytest
import torch
from test_sdft import make_tiny_task

from benchmark.cli import build_parser, main, resolve_backbone
from methods.backbones import (
    InputConvention,
    backbone_name,
    backbone_spec,
    create_backbone,
    normalize,
    read_state_dict,
    weights_digest,
)
from methods.features import features_key

timm = pytest.importorskip("timm")
ARCH = "test_efficientnet"  # an EfficientNet of 0.36 M parameters: SDFT can cut it like the built-in ones


def save_random(path, arch=ARCH, seed=0):
    torch.manual_seed(seed)
    state = timm.create_model(arch, pretrained=False).state_dict()
    if str(path).endswith(".safetensors"):
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save(state, path)
    return path


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """Two checkpoints of one architecture (a torch state dict and a safetensors file) and one of another."""
    root = tmp_path_factory.mktemp("weights")
    return {
        "a": save_random(root / "a.pt", seed=0),
        "b": save_random(root / "b.safetensors", seed=1),
        "vit": save_random(root / "vit.pt", "test_vit", seed=2),
    }


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("timm-data") / "data"
    make_tiny_task(root, n_classes=3, groups_per_class=4, per_group=4)
    return root


def run(data, out, cache, weights_file, *methods, arch=ARCH, extra=()):
    return main(
        [
            "run",
            *[a for m in methods for a in ("--method", m)],
            "--task",
            f"folder:{data}",
            "--backbone",
            f"timm:{arch}",
            "--weights",
            str(weights_file),
            *"--image-size 32 --shots 1 --ways 3 --queries 2 --episodes 3 --quiet --cache-dir".split(),
            str(cache),
            "--out",
            str(out),
            *extra,
        ]
    )


def rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_protonet_and_sdft_run_with_a_saved_timm_model(data, weights, tmp_path, capsys):
    out = tmp_path / "r.csv"
    assert run(data, out, tmp_path / "cache", weights["a"], "protonet", "sdft:epochs=1,batch_size=8,steps=2") == 0, (
        capsys.readouterr().err
    )
    made = rows(out)
    assert {r["method"] for r in made} == {"protonet", "sdft:batch_size=8,epochs=1,steps=2"} and len(made) == 6
    spec = backbone_spec(f"timm:{ARCH}", str(weights["a"]))
    assert {r["backbone"] for r in made} == {f"timm:{ARCH}"}  # the name, never the weights' path
    assert {r["weights"] for r in made} == {weights_digest(spec)} and {r["transductive"] for r in made} == {"0"}
    # warm: step 1's network top comes back from the cache as timm's own modules, with the same numbers
    assert (
        run(data, tmp_path / "again.csv", tmp_path / "cache", weights["a"], "sdft:epochs=1,batch_size=8,steps=2") == 0
    )
    assert "cached" in capsys.readouterr().err
    assert [r["accuracy"] for r in rows(tmp_path / "again.csv")] == [
        r["accuracy"] for r in made if r["method"] != "protonet"
    ]


def test_two_checkpoints_of_one_architecture_never_share_rows_or_features(data, weights, tmp_path, capsys):
    out, cache = tmp_path / "r.csv", tmp_path / "cache"
    assert run(data, out, cache, weights["a"], "protonet") == 0
    capsys.readouterr()
    assert run(data, out, cache, weights["b"], "protonet") == 2  # the same file: refused, not reused
    err = capsys.readouterr().err.strip()
    a, b = (weights_digest(backbone_spec(f"timm:{ARCH}", str(weights[k]))) for k in "ab")
    assert a != b and "\n" not in err and f"other backbone weights (digest {a})" in err and b in err
    assert run(data, tmp_path / "b.csv", cache, weights["b"], "protonet") == 0
    assert {r["weights"] for r in rows(tmp_path / "b.csv")} == {b}
    from tasks.datasets import load_dataset

    table = load_dataset(f"folder:{data}", data)
    keys = {features_key(table, backbone_spec(f"timm:{ARCH}", str(weights[k])), 32) for k in "ab"}
    assert len(keys) == 2  # and the features they are cached under differ


def test_the_same_weights_elsewhere_are_the_same_backbone(weights, tmp_path):
    copy = shutil.copy(weights["a"], tmp_path / "elsewhere.pt")
    specs = [backbone_spec(f"timm:{ARCH}", str(path)) for path in (weights["a"], copy)]
    assert specs[0] != specs[1] and backbone_name(specs[0]) == backbone_name(specs[1]) == f"timm:{ARCH}"
    assert weights_digest(specs[0]) == weights_digest(specs[1])  # content, not where the file lies


def test_weights_of_another_architecture_are_a_one_line_error_naming_a_key(data, weights, tmp_path, capsys):
    assert run(data, tmp_path / "r.csv", tmp_path / "cache", weights["vit"], "protonet") == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and f"does not fit timm's {ARCH}" in err
    assert "missing key 'conv_stem.weight'" in err and not (tmp_path / "r.csv").exists()


def test_a_misshapen_tensor_is_named(weights, tmp_path):
    state = read_state_dict(str(weights["a"]))
    state["conv_head.weight"] = state["conv_head.weight"][:10]
    torch.save(state, tmp_path / "bad.pt")
    with pytest.raises(Exception, match=r"conv_head.weight has shape \(10,") as exc:
        create_backbone(backbone_spec(f"timm:{ARCH}", str(tmp_path / "bad.pt")))
    assert "\n" not in str(exc.value)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--backbone", f"timm:{ARCH}"], "needs --weights FILE"),
        (["--backbone", "efficientnet_lite0", "--weights", "x.pt"], "--weights goes with --backbone timm:NAME"),
        (["--backbone", "timm:no_such_net", "--weights", "pretrained"], "unknown timm architecture"),
        (["--backbone", f"timm:{ARCH}", "--weights", "/no/such/file.pt"], "no such file"),
    ],
)
def test_bad_backbone_options_are_one_line_errors(argv, message, data, capsys):
    assert main([*"run --method protonet --task".split(), f"folder:{data}", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err


def test_input_size_and_normalisation_come_from_the_pretrained_config(weights):
    spec_args = [*"run --method protonet --backbone".split(), f"timm:{ARCH}", "--weights", str(weights["a"])]
    args = build_parser().parse_args(spec_args)
    resolve_backbone(args)
    assert args.image_size == 160  # test_efficientnet's pretrained input size
    args = build_parser().parse_args([*spec_args, "--image-size", "48"])
    resolve_backbone(args)
    assert args.image_size == 48
    args = build_parser().parse_args(["run", "--method", "protonet"])
    resolve_backbone(args)
    assert args.image_size == 128 and args.backbone == "efficientnet_lite0"
    # the harness feeds (pixels / 255 - 0.5) / 0.5; the model sees (pixels / 255 - mean) / std
    model = create_backbone(backbone_spec(f"timm:{ARCH}", str(weights["a"]))).eval()
    plain = timm.create_model(ARCH, pretrained=False).eval()
    plain.load_state_dict(model.state_dict())
    pixels = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    mean, std = (torch.tensor(plain.pretrained_cfg[k]).view(1, 3, 1, 1) for k in ("mean", "std"))
    with torch.no_grad():
        torch.testing.assert_close(model(normalize(pixels)), plain((pixels / 255 - mean) / std), rtol=1e-4, atol=1e-4)
    assert any(isinstance(h, InputConvention) for h in model.conv_stem._forward_pre_hooks.values())


def test_a_vision_transformer_serves_feature_methods_and_sdft_refuses_it(data, weights, tmp_path, capsys):
    out = tmp_path / "r.csv"
    assert run(data, out, tmp_path / "cache", weights["vit"], "protonet", arch="test_vit") == 0
    assert {r["backbone"] for r in rows(out)} == {"timm:test_vit"}
    capsys.readouterr()
    assert run(data, tmp_path / "s.csv", tmp_path / "cache", weights["vit"], "sdft", arch="test_vit") == 2
    err = capsys.readouterr().err
    assert "error: VisionTransformer is not an EfficientNet-style network" in err and "step 1" not in err

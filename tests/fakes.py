"""Tiny fake datasets in the official layouts (as torchgeo's tests do), generated in a temporary folder.

Images are a few pixels wide, coloured by class and shaded by group, so loaders, decoders and samplers
can be exercised in milliseconds without the real data.
"""

from __future__ import annotations

import io
import tarfile
import zipfile
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from tasks.datasets import table_from_rows

PALETTE = [
    (200, 40, 40),
    (40, 200, 40),
    (40, 40, 200),
    (200, 200, 40),
    (200, 40, 200),
    (40, 200, 200),
    (120, 120, 120),
    (250, 150, 50),
]


def write_image(path: Path, label: int, group: int = 0, size: int = 12, mode: str = "RGB") -> Path:
    rng = np.random.default_rng([label, group, size])
    base = np.array(PALETTE[label % len(PALETTE)], dtype=np.int16) - 20 * (group % 4)
    pixels = np.clip(base + rng.integers(-15, 16, (size, size, 3)), 0, 255).astype(np.uint8)
    # two corner pixels marked by the file name: files of one class and group are near-identical images, not
    # byte-identical copies (which the readers merge into one scene, or refuse across classes and splits)
    mark = zlib.crc32(Path(path).name.encode())
    pixels[0, 0], pixels[-1, -1] = mark & 255, (mark >> 8) & 255
    img = Image.fromarray(pixels)
    path.parent.mkdir(parents=True, exist_ok=True)
    (img.convert("L") if mode == "L" else img).save(path)
    return path


def hirise_v1_like(data_dir: Path, per_class=None, groups: int = 4) -> Path:
    """data_dir/hirise-v1/{labels-map-proj.txt, map-proj/*.jpg}; label ids 0,1,2,6 (no 5, like v1), and some
    `thresh-1-` variants, which belong to their observation's group."""
    per_class = per_class or {0: 8, 1: 6, 2: 6, 6: 4}
    root = Path(data_dir) / "hirise-v1"
    lines = []
    n = 0
    for label, count in per_class.items():
        for i in range(count):
            obs = f"ESP_{10000 + (i % groups):06d}_{1000 + label:04d}"
            prefix = "thresh-1-" if i % 3 == 2 else ""
            name = f"{prefix}{obs}_RED-{n:04d}.jpg"
            write_image(root / "map-proj" / name, label, i % groups, mode="L")
            lines.append(f"{name} {label}")
            n += 1
    root.mkdir(parents=True, exist_ok=True)
    (root / "labels-map-proj.txt").write_text("\n".join(lines) + "\n")
    return Path(data_dir)


def aid_like(data_dir: Path, classes=("Airport", "Beach", "Desert"), per_class: int = 3) -> Path:
    for label, name in enumerate(classes):
        for i in range(per_class):
            write_image(Path(data_dir) / "aid-subset" / "AID" / name / f"{name.lower()}_{i + 1}.jpg", label, i)
    return Path(data_dir)


DOMARS_CODES = ("aec", "cra", "smo")


def domars16k_like(
    data_dir: Path, top: str | None = "data", codes=DOMARS_CODES, products: int = 3, per_product: int = 2
) -> Path:
    """data_dir/domars16k[/top]/{train,val,test}/<code>/<CTX product>_CX<x>_CY<y>.jpg."""
    root = Path(data_dir) / "domars16k"
    if top:
        root = root / top
    for split_no, split in enumerate(("train", "val", "test")):
        for label, code in enumerate(codes):
            for p in range(products):
                product = f"B0{split_no}_{10000 + 10 * label + p:06d}_1234_XN_12S345W"
                for t in range(per_product):
                    write_image(root / split / code / f"{product}_CX{100 * t}_CY{50 * t + 7}.jpg", label, p)
    return Path(data_dir)


def folder_like(root: Path, classes=("dunes", "craters", "plains"), per_class: int = 4) -> Path:
    for label, name in enumerate(classes):
        for i in range(per_class):
            write_image(Path(root) / name / f"img{i}.png", label, i)
    return Path(root)


def csv_like(
    root: Path, classes=("dunes", "craters"), groups: int = 3, per_group: int = 2, target_groups: int = 1
) -> Path:
    """root/labels.csv with path,label,group,split (relative paths; the last `target_groups` scenes of each
    class are its target split), images in root/img/."""
    rows = ["path,label,group,split"]
    for label, name in enumerate(classes):
        for g in range(groups):
            for i in range(per_group):
                rel = f"img/{name}_{g}_{i}.png"
                write_image(Path(root) / rel, label, g)
                rows.append(f"{rel},{name},{name}{g},{'target' if g >= groups - target_groups else 'base'}")
    (Path(root) / "labels.csv").write_text("\n".join(rows) + "\n")
    return Path(root) / "labels.csv"


def zip_folder(folder: Path, archive: Path, arcroot: str = "") -> Path:
    """Zip every file under `folder`, named `arcroot/<relative path>`."""
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(Path(folder).rglob("*")):
            if path.is_file():
                zf.write(
                    path, str(Path(arcroot) / path.relative_to(folder)) if arcroot else str(path.relative_to(folder))
                )
    return archive


def tar_folder(folder: Path, archive: Path, arcroot: str = "") -> Path:
    with tarfile.open(archive, "w:gz") as tf:
        for path in sorted(Path(folder).rglob("*")):
            if path.is_file():
                rel = path.relative_to(folder)
                tf.add(path, arcname=str(Path(arcroot) / rel) if arcroot else str(rel))
    return archive


def evil_zip(archive: Path, member: str = "../escaped.txt") -> Path:
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("data/train/aec/ok_CX0_CY0.jpg", b"not really")
        zf.writestr(member, b"should never be written")
    return archive


def evil_tar(archive: Path, member: str = "../escaped.txt", link_to: str | None = None) -> Path:
    with tarfile.open(archive, "w") as tf:
        info = tarfile.TarInfo(member)
        if link_to is not None:
            info.type, info.linkname = tarfile.SYMTYPE, link_to
            tf.addfile(info)
        else:
            payload = b"should never be written"
            info.size = len(payload)
            tf.addfile(info, io.BytesIO(payload))
    return archive


def grouped_table(
    n_classes: int = 6,
    n_groups: int = 12,
    seed: int = 0,
    min_images: int = 1,
    max_images: int = 6,
    classes_per_group=(1, 3),
):
    """A table without image files whose groups hold several classes each (scenes with several landforms),
    with uneven sizes; for sampler and split tests."""
    rng = np.random.default_rng(seed)
    paths, labels, groups = [], [], []
    for g in range(n_groups):
        k = int(rng.integers(classes_per_group[0], classes_per_group[1] + 1))
        for c in rng.choice(n_classes, size=min(k, n_classes), replace=False):
            for i in range(int(rng.integers(min_images, max_images + 1))):
                paths.append(f"/nonexistent/g{g}_c{c}_{i}.png")
                labels.append(int(c))
                groups.append(f"scene{g}")
    present = sorted(set(labels))
    dense = {c: i for i, c in enumerate(present)}
    return table_from_rows("grouped", paths, [dense[c] for c in labels], groups, [f"class{c}" for c in present])

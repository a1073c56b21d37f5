"""Writes the large scene of docs/mapping.md ("Large scenes: bounded memory") and what mapping it needs.

    .venv/bin/python docs/make_large_scene.py --size 20000 --out /tmp/gis-large

OUT/scene{size}.tif: a size x size tiled (512 px), deflate-compressed uint8 GeoTIFF in UTM 33N with 6 m pixels,
bright striped texture in the left half and dark noisy ground in the right half, written 2048 x 2048 px at a
time (bounded memory); OUT/points{size}.gpkg: three points per half in WGS84 (attribute `landform`);
OUT/base/: an 18-image folder task (`--task folder:OUT/base`) for the methods' base pool. Needs the gis extra.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pyogrio
import pyproj
import rasterio
import shapely
from PIL import Image
from rasterio.transform import Affine
from rasterio.windows import Window

TRANSFORM = Affine(6.0, 0.0, 500_000.0, 0.0, -6.0, 4_200_000.0)
# sample positions (column, row) on a 20,000 px scene, scaled to the scene's size
SAMPLES = [
    (2000, 3000, "stripes"),
    (6000, 15000, "stripes"),
    (8000, 9000, "stripes"),
    (14000, 2500, "ground"),
    (17000, 12000, "ground"),
    (12500, 18000, "ground"),
]


def write_scene(path: Path, n: int) -> None:
    profile = dict(
        driver="GTiff",
        width=n,
        height=n,
        count=1,
        dtype="uint8",
        crs="EPSG:32633",
        transform=TRANSFORM,
        tiled=True,
        blockxsize=512,
        blockysize=512,
        compress="deflate",
    )
    rng = np.random.default_rng(0)
    with rasterio.open(path, "w", **profile) as dst:
        for r0 in range(0, n, 2048):
            h = min(2048, n - r0)
            rows = np.arange(r0, r0 + h)[:, None]
            for c0 in range(0, n, 2048):
                w = min(2048, n - c0)
                cols = np.arange(c0, c0 + w)[None, :]
                noise = rng.normal(0, 8, (h, w))
                stripes = np.where(rows % 8 < 2, 120.0, 215.0) + noise
                ground = 60.0 + noise
                dst.write(
                    np.clip(np.where(cols < n // 2, stripes, ground), 0, 255).astype(np.uint8),
                    1,
                    window=Window(c0, r0, w, h),
                )


def write_points(path: Path, n: int) -> None:
    to_lonlat = pyproj.Transformer.from_crs("EPSG:32633", "EPSG:4326", always_xy=True)
    geoms = [
        shapely.Point(*to_lonlat.transform(*(TRANSFORM @ (c * n / 20000 + 0.5, r * n / 20000 + 0.5))))
        for c, r, _ in SAMPLES
    ]
    pyogrio.raw.write(
        path,
        shapely.to_wkb(geoms),
        [np.array([s[2] for s in SAMPLES], object)],
        ["landform"],
        driver="GPKG",
        geometry_type="Point",
        crs="EPSG:4326",
    )


def write_base(root: Path) -> None:
    """Three classes of six 32 px images: flat colours with class-specific stripes."""
    for c, name in enumerate(("craters", "dunes", "plains")):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(6):
            rng = np.random.default_rng([c, i])
            img = np.full((32, 32), 60.0 + 70 * c) + rng.normal(0, 10, (32, 32))
            img[:: 2 + c] = 230
            Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(root / name / f"{i}.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=20000)
    parser.add_argument("--out", type=Path, default=Path("/tmp/gis-large"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    write_scene(args.out / f"scene{args.size}.tif", args.size)
    write_points(args.out / f"points{args.size}.gpkg", args.size)
    write_base(args.out / "base")
    print(f"wrote {args.out}/scene{args.size}.tif, points{args.size}.gpkg and base/")


if __name__ == "__main__":
    main()

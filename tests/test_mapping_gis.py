"""bench map in GIS terms: georeferenced scenes in (windowed reads, 16-bit, no-data), GIS samples in any CRS,
GeoTIFF and GeoPackage outputs read back at the right map coordinates."""

from __future__ import annotations

import json
import re
import warnings

import numpy as np
import pytest
from PIL import Image

rasterio = pytest.importorskip("rasterio")
pyogrio = pytest.importorskip("pyogrio")
shapely = pytest.importorskip("shapely")
pyproj = pytest.importorskip("pyproj")

from rasterio.transform import Affine  # noqa: E402

from benchmark.cli import main  # noqa: E402
from benchmark.mapping.points import write_points  # noqa: E402
from benchmark.mapping.scene import RasterScene, Scene, load_scene  # noqa: E402
from tasks.windows import WindowGrid  # noqa: E402
from tests.fakes import folder_like  # noqa: E402

SCENE_CRS = "EPSG:32633"  # UTM 33N: metres
# north-up, 6 m x 4 m pixels (not square, so a swapped axis shows), origin far from (0, 0)
TRANSFORM = Affine(6.0, 0.0, 500_000.0, 0.0, -4.0, 4_100_000.0)
HEIGHT, WIDTH, SPLIT = 128, 192, 112  # columns < SPLIT: striped texture; the rest: smooth dark ground


def halves(dtype=np.uint8, low=60, high=215, seed=3) -> np.ndarray:
    """(HEIGHT, WIDTH) scene: bright horizontal stripes left of SPLIT, dark noisy ground right of it."""
    rng = np.random.default_rng(seed)
    unit = np.clip(rng.normal(0.0, 0.03, (HEIGHT, WIDTH)), -1, 1)
    left = np.where(np.arange(HEIGHT)[:, None] % 4 == 0, 0.45, 1.0) + unit
    right = 0.0 + unit
    values = np.where(np.arange(WIDTH)[None, :] < SPLIT, left, right)
    return (low + (high - low) * np.clip(values, 0, 1)).astype(dtype)


def write_geotiff(path, pixels, crs=SCENE_CRS, transform=TRANSFORM, nodata=None, tiled=True):
    profile = {
        "driver": "GTiff",
        "height": pixels.shape[0],
        "width": pixels.shape[1],
        "count": 1,
        "dtype": pixels.dtype.name,
        "crs": crs,
        "transform": transform,
        "nodata": nodata,
    }
    if tiled:
        profile.update(tiled=True, blockxsize=64, blockysize=64)
    with warnings.catch_warnings():  # an identity transform: a raster without georeferencing, on purpose
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(pixels, 1)


def map_args(tmp_path, scene, labels, *extra):
    folder_like(tmp_path / "base", per_class=6)
    return [
        *"map --method protonet --scene".split(),
        str(scene),
        "--labels",
        str(labels),
        *"--window 32 --stride 16 --out".split(),
        str(tmp_path / "out"),
        "--task",
        f"folder:{tmp_path / 'base'}",
        "--image-size",
        "32",
        "--cache-dir",
        str(tmp_path / "cache"),
        "--quiet",
        "--preview",
        "150",
        *extra,
    ]


def test_georeferenced_scene_and_samples_in_another_crs_map_back_in_place(tmp_path, capsys):
    write_geotiff(tmp_path / "scene.tif", halves())
    # samples in WGS84 longitude/latitude (not the scene's CRS): a polygon over part of the striped half and
    # points on the ground half
    to_lonlat = pyproj.Transformer.from_crs(SCENE_CRS, "EPSG:4326", always_xy=True)

    def lonlat(col, row):
        return to_lonlat.transform(*(TRANSFORM @ (col, row)))

    polygon = shapely.Polygon([lonlat(8, 8), lonlat(72, 8), lonlat(72, 72), lonlat(8, 72)])
    points = [shapely.Point(lonlat(c, r)) for c, r in ((150, 30), (170, 100), (135, 64))]
    geoms = [polygon] + points
    labels = np.asarray(["stripes"] + ["ground"] * 3, dtype=object)
    pyogrio.raw.write(
        tmp_path / "samples.gpkg",
        shapely.to_wkb(geoms),
        [labels, np.arange(4)],
        ["landform", "id"],
        driver="GPKG",
        geometry_type="Unknown",
        crs="EPSG:4326",
    )
    rc = main(map_args(tmp_path, tmp_path / "scene.tif", tmp_path / "samples.gpkg", "--label-field", "landform"))
    assert rc == 0, capsys.readouterr().err
    out = tmp_path / "out"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["georeferenced"] and summary["geotransform"] == list(TRANSFORM.to_gdal())
    assert pyproj.CRS.from_wkt(summary["crs"]) == pyproj.CRS(SCENE_CRS)
    grid = WindowGrid(HEIGHT, WIDTH, 32, 16)
    # the polygon (pixels 8-72) covers more than half of the cells of a 3 x 3 block of windows
    assert sum(summary["labelled_windows"].values()) > 3 and summary["labelled_windows"]["ground"] == 3
    with rasterio.open(out / "labels.tif") as src:
        assert src.crs == rasterio.crs.CRS.from_string(SCENE_CRS) and src.transform == TRANSFORM
        assert (src.width, src.height) == (WIDTH, HEIGHT)
        assert json.loads(src.tags()["CLASS_NAMES"]) == ["ground", "stripes"]
        assert src.colormap(1)[1][:3] != src.colormap(1)[0][:3]
        label_raster = src.read(1)
        # the pattern at the right map coordinates: sample by map position, not by array position
        for col, row, expected in (
            (20, 20, "stripes"),
            (90, 110, "stripes"),
            (140, 10, "ground"),
            (185, 120, "ground"),
        ):
            x, y = TRANSFORM @ (col + 0.5, row + 0.5)
            r, c = src.index(x, y)
            assert (r, c) == (row, col)
            assert summary["classes"][label_raster[r, c]] == expected, (col, row)
    truth = np.where(np.arange(WIDTH)[None, :] < SPLIT, 1, 0).repeat(HEIGHT, 0)
    assert (label_raster == truth).mean() > 0.9
    assert np.array_equal(label_raster, grid.raster(np.load(out / "labels.npy")))
    with rasterio.open(out / "probabilities.tif") as src:
        assert src.count == 2 and src.descriptions == ("ground", "stripes") and src.transform == TRANSFORM
        probs = src.read()
        assert np.allclose(probs.sum(0), 1, atol=1e-5)
        assert np.array_equal(probs.argmax(0), label_raster)  # no smoothing: the labels are the argmax
    meta, _, wkb, fields = pyogrio.raw.read(out / "classes.gpkg")
    assert pyproj.CRS.from_user_input(meta["crs"]) == pyproj.CRS(SCENE_CRS)
    polygons = shapely.from_wkb(wkb)
    names = list(meta["fields"])
    cls = fields[names.index("class")]
    mean_prob = fields[names.index("mean_probability")]
    assert set(cls) == {"ground", "stripes"} and ((mean_prob > 0.5) & (mean_prob <= 1)).all()
    # the polygons tile the scene's footprint in map coordinates; each class's area is its pixels' area
    footprint = shapely.box(*rasterio.transform.array_bounds(HEIGHT, WIDTH, TRANSFORM)[::-1][::-1])
    assert abs(shapely.union_all(polygons).area - footprint.area) < 1e-6 * footprint.area
    for c, name in enumerate(summary["classes"]):
        area = sum(p.area for p, k in zip(polygons, cls) if k == name)
        assert area == pytest.approx((label_raster == c).sum() * 6 * 4)
    assert np.allclose(fields[names.index("area")], shapely.area(polygons))


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_sixteen_bit_scene_is_stretched_not_saturated(tmp_path, capsys, suffix):
    pixels = halves(np.uint16, low=1000, high=1800)  # every value > 255: an 8-bit cast saturates all of it
    if suffix == ".png":
        Image.fromarray(pixels).save(tmp_path / "scene.png")
        assert isinstance(load_scene(tmp_path / "scene.png"), Scene)
    else:
        write_geotiff(tmp_path / "scene.tif", pixels, crs=None, transform=Affine.identity())
        scene = load_scene(tmp_path / "scene.tif")
        assert isinstance(scene, RasterScene) and scene.geotransform is None and scene.limits[1] > 1000
    write_points(
        tmp_path / "points.csv",
        [(20, 20), (60, 100), (150, 30), (170, 100)],
        ["stripes", "stripes", "ground", "ground"],
    )
    rc = main(map_args(tmp_path, tmp_path / f"scene{suffix}", tmp_path / "points.csv"))
    assert rc == 0, capsys.readouterr().err
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    fraction = summary["area_fraction"]["stripes"]
    assert abs(fraction - SPLIT / WIDTH) < 0.1, summary["area_fraction"]
    assert not summary["georeferenced"] and "pixel coordinates" in summary["coordinates"]
    with rasterio.open(tmp_path / "out" / "labels.tif") as src:
        assert src.crs is None and src.transform.is_identity


@pytest.mark.parametrize("suffix, driver", [(".tif", "GTiff"), (".jp2", "JP2OpenJPEG")])
def test_raster_windows_equal_in_memory_windows(tmp_path, suffix, driver):
    if driver not in rasterio.drivers.raster_driver_extensions().values():
        pytest.skip(f"this GDAL has no {driver} driver")
    pixels = np.random.default_rng(0).integers(0, 256, (70, 90), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "scene.png")
    options = {"REVERSIBLE": "YES", "QUALITY": "100"} if driver == "JP2OpenJPEG" else {}
    with rasterio.open(
        tmp_path / f"scene{suffix}",
        "w",
        driver=driver,
        height=70,
        width=90,
        count=1,
        dtype="uint8",
        crs=SCENE_CRS,
        transform=TRANSFORM,
        **options,
    ) as dst:
        dst.write(pixels, 1)
    memory, raster = load_scene(tmp_path / "scene.png"), load_scene(tmp_path / f"scene{suffix}")
    assert isinstance(raster, RasterScene) and raster.geotransform == TRANSFORM.to_gdal()
    for x0, y0 in ((0, 0), (50, 30), (37, 11)):
        assert np.array_equal(memory.window(x0, y0, 40, 24), raster.window(x0, y0, 40, 24))
    x0, y0 = WindowGrid(70, 90, 40, 20).origins()
    assert np.array_equal(raster.valid_fractions(WindowGrid(70, 90, 40, 20)), np.ones(len(x0)))


def test_no_data_is_never_classified(tmp_path, capsys):
    pixels = halves(np.float32, low=-5.0, high=30.0)
    pixels[:, 160:] = np.nan  # the right edge is no-data
    pixels[:4, :8] = -9999.0  # and a corner holds the nodata value
    write_geotiff(tmp_path / "scene.tif", pixels, nodata=-9999.0)
    scene = load_scene(tmp_path / "scene.tif")
    assert scene.limits[0] >= -5.0 and scene.limits[1] <= 30.0  # no-data values do not stretch the limits
    write_points(
        tmp_path / "points.csv",
        [(20, 20), (60, 100), (130, 30), (140, 100)],
        ["stripes", "stripes", "ground", "ground"],
    )
    rc = main(map_args(tmp_path, tmp_path / "scene.tif", tmp_path / "points.csv"))
    assert rc == 0, capsys.readouterr().err
    out = tmp_path / "out"
    grid = WindowGrid(HEIGHT, WIDTH, 32, 16)
    labels = np.load(out / "labels.npy")
    x0, _ = grid.origins()
    mostly_nodata = (np.minimum(x0 + 32, WIDTH) - np.maximum(x0, 160)).clip(0) / 32 > 0.5
    assert (labels.ravel()[mostly_nodata] == -1).all() and (labels.ravel()[~mostly_nodata] >= 0).all()
    assert np.isnan(np.load(out / "probabilities.npy").reshape(grid.n, -1)[mostly_nodata]).all()
    with rasterio.open(out / "labels.tif") as src:
        raster = src.read(1)
        assert src.nodata == 255
    assert (raster[:, 160:] == 255).all() and (raster[:4, :8] == 255).all() and (raster[10:, :150] != 255).all()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["unclassified_windows"] == int(mostly_nodata.sum())
    capsys.readouterr()
    # a labelled window in the no-data part is refused
    write_points(tmp_path / "bad.csv", [(20, 20), (180, 100)], ["stripes", "ground"])
    rc = main(map_args(tmp_path, tmp_path / "scene.tif", tmp_path / "bad.csv"))
    err = capsys.readouterr().err
    assert rc == 2 and "mostly no-data" in err and err.count("\n") == 1, err


def test_a_paletted_geotiff_shows_its_colours_like_a_paletted_png(tmp_path):
    rng = np.random.default_rng(1)
    indices = rng.integers(0, 4, (40, 50), dtype=np.uint8)
    colours = {0: (200, 30, 30, 255), 1: (20, 180, 40, 255), 2: (30, 40, 220, 255), 3: (240, 240, 10, 255)}
    png = Image.fromarray(indices, mode="P")
    png.putpalette([v for c in range(4) for v in colours[c][:3]])
    png.save(tmp_path / "scene.png")
    with rasterio.open(
        tmp_path / "scene.tif",
        "w",
        driver="GTiff",
        height=40,
        width=50,
        count=1,
        dtype="uint8",
        crs=SCENE_CRS,
        transform=TRANSFORM,
    ) as dst:
        dst.write(indices, 1)
        dst.write_colormap(1, colours)
    memory, raster = load_scene(tmp_path / "scene.png"), load_scene(tmp_path / "scene.tif")
    assert memory.pixels.ndim == 3  # Pillow shows the palette's colours
    assert np.array_equal(memory.window(5, 3, 30, 16), raster.window(5, 3, 30, 16))
    assert np.array_equal(memory.preview(1.0), raster.preview(1.0))


@pytest.mark.parametrize("suffix, driver", [(".geojson", "GeoJSON"), (".shp", "ESRI Shapefile")])
def test_geojson_and_shapefile_labels_select_the_same_windows_as_a_geopackage(tmp_path, suffix, driver):
    from benchmark.mapping.points import read_points

    write_geotiff(tmp_path / "scene.tif", halves())
    scene = load_scene(tmp_path / "scene.tif")
    grid = WindowGrid(HEIGHT, WIDTH, 32, 16)
    to_lonlat = pyproj.Transformer.from_crs(SCENE_CRS, "EPSG:4326", always_xy=True)

    def polygon(x0, y0, x1, y1):  # a pixel rectangle, as a WGS84 polygon (a shapefile holds one geometry type)
        return shapely.Polygon(
            [to_lonlat.transform(*(TRANSFORM @ xy)) for xy in ((x0, y0), (x1, y0), (x1, y1), (x0, y1))]
        )

    geoms = shapely.to_wkb([polygon(8, 8, 72, 72), polygon(136, 24, 168, 56)])
    selected = []
    for name, drv in ((f"labels{suffix}", driver), ("labels.gpkg", "GPKG")):
        pyogrio.raw.write(
            tmp_path / name,
            geoms,
            [np.array(["stripes", "ground"], object)],
            ["label"],
            driver=drv,
            geometry_type="Polygon",
            crs="EPSG:4326",
        )
        selected.append(read_points(tmp_path / name, grid, scene=scene))
    assert np.array_equal(selected[0].windows, selected[1].windows)
    assert np.array_equal(selected[0].labels, selected[1].labels)
    # cells along each axis: [0, 24), [24, 40), [40, 56), [56, 72), [72, 88), ...; the polygon (8-72 on both
    # axes) covers all of cells 1-3, 16/24 of cell 0 along each axis (so 44% of the corner cell: not selected)
    rows, cols = np.divmod(selected[1].windows[selected[1].labels == 1], grid.shape[1])
    cells = set(zip(rows.tolist(), cols.tolist()))
    assert cells == {(r, c) for r in range(4) for c in range(4)} - {(0, 0)}


@pytest.mark.parametrize(
    "make, extra, message",
    [
        (
            lambda p: pyogrio.raw.write(
                p,
                shapely.to_wkb([shapely.Point(500_100, 4_099_900)]),
                [np.array(["a"], object)],
                ["kind"],
                driver="GPKG",
                geometry_type="Point",
                crs=SCENE_CRS,
            ),
            [],
            "no attribute 'label'.*--label-field",
        ),
        (
            lambda p: pyogrio.raw.write(
                p,
                shapely.to_wkb([shapely.Point(0, 0), shapely.Point(1, 1)]),
                [np.array(["a", "b"], object)],
                ["label"],
                driver="GPKG",
                geometry_type="Point",
                crs=SCENE_CRS,
            ),
            [],
            "feature 1: point lies outside the scene",
        ),
        (
            lambda p: pyogrio.raw.write(
                p,
                shapely.to_wkb([shapely.LineString([(500_100, 4_099_900), (500_200, 4_099_800)])]),
                [np.array(["a"], object)],
                ["label"],
                driver="GPKG",
                geometry_type="LineString",
                crs=SCENE_CRS,
            ),
            [],
            "LineString; labels are points or polygons",
        ),
        (
            lambda p: pyogrio.raw.write(
                p,
                shapely.to_wkb([shapely.box(500_100, 4_099_900, 500_104, 4_099_904)]),
                [np.array(["a"], object)],
                ["label"],
                driver="GPKG",
                geometry_type="Polygon",
                crs=SCENE_CRS,
            ),
            [],
            "covers no window's cell",
        ),
    ],
)
def test_bad_gis_labels_are_one_line(tmp_path, capsys, make, extra, message):
    write_geotiff(tmp_path / "scene.tif", halves())
    make(tmp_path / "labels.gpkg")
    rc = main(map_args(tmp_path, tmp_path / "scene.tif", tmp_path / "labels.gpkg", *extra))
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    assert re.search(message, err), err


def test_labels_in_a_crs_on_a_scene_without_georeferencing_are_refused(tmp_path, capsys):
    Image.fromarray(halves()).save(tmp_path / "scene.png")
    pyogrio.raw.write(
        tmp_path / "labels.gpkg",
        shapely.to_wkb([shapely.Point(10, 10)]),
        [np.array(["a"], object)],
        ["label"],
        driver="GPKG",
        geometry_type="Point",
        crs=SCENE_CRS,
    )
    rc = main(map_args(tmp_path, tmp_path / "scene.png", tmp_path / "labels.gpkg"))
    err = capsys.readouterr().err
    assert rc == 2 and "not georeferenced" in err, err

"""Landform mapping of a whole scene from a few labelled windows, one module per job:

- `scene`: where the pixels come from (in memory via Pillow, or window by window from any GDAL raster);
- `tasks.windows.WindowGrid`: the sliding windows and the cell each map pixel belongs to;
- `points`: the labelled samples (a CSV of pixel points, or points/polygons of a vector layer in any CRS);
- `context`: the harness's windows (`SceneWindows`: scene, grid, which window each handle is) and what a
  method is handed of them (a plain Context: the base task's rows, then the windows' pixels and features);
- `answers`: what a method is asked of a map (`window_query`) and its answers in this process;
  `isolated`: the same asked of it in a bubblewrap sandbox (`--isolate`);
- `smoothing`: none, majority filter, Potts MRF over the window grid;
- `render`: the PNG figures and summary.json; `gis`: the georeferenced GeoTIFF and GeoPackage outputs;
- `map`: the orchestration (`map_scene`); `craters`: the scored CTX crater case (`bench craters`).

See docs/mapping.md.
"""

"""`bench report`: plots (accuracy vs shots with CI bands, per-class heat maps) and a self-contained HTML page."""

from __future__ import annotations

from pathlib import Path

from benchmark.cli import add_fixedk_files


def add_parser(sub) -> None:
    p = sub.add_parser("report", help="PNG plots and a self-contained report.html from result CSVs")
    p.add_argument("csv", nargs="*", metavar="CSV", help="results files to merge (default: results/*.csv)")
    p.add_argument("--out", default="report", help="folder for the PNGs and report.html (default: ./report)")
    add_fixedk_files(p, "fixed-K results files to show beside Mars-Bench's published numbers")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.set_defaults(handler=cmd_report)


def cmd_report(args) -> int:
    from benchmark.console import console
    from benchmark.leaderboard import load_results
    from benchmark.report import write_report

    rows, merged = load_results(args.csv)
    extra = ""
    if args.fixedk:
        from benchmark.published import comparison, html_section

        extra = html_section(comparison(args.fixedk))
    written = write_report(rows, merged, Path(args.out), extra_html=extra)
    for path in written:
        console.print(f"wrote {path}", highlight=False)
    return 0

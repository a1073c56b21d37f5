"""`bench leaderboard`: merge result CSVs and rank methods with paired comparisons on shared episodes."""

from __future__ import annotations

from pathlib import Path

from benchmark.cli import add_fixedk_files, file_path
from common.files import atomic_write_text


def add_parser(sub) -> None:
    p = sub.add_parser("leaderboard", help="merge result CSVs and rank methods (paired differences, tied ranks)")
    p.add_argument("csv", nargs="*", metavar="CSV", help="results files to merge (default: results/*.csv)")
    p.add_argument(
        "--format",
        choices=["table", "csv", "markdown", "json", "summary", "sources", "transductive"],
        default="table",
        help="table: rich tables in the terminal (default); csv, markdown, json: for "
        "papers and READMEs; summary: markdown, method x shots per task; sources: "
        "markdown, each --source beside no source, paired; transductive: markdown, "
        "the best transductive method against the best inductive one, paired",
    )
    p.add_argument(
        "--inductive-only",
        action="store_true",
        help="leave out transductive methods (those that read their episode's unlabelled query features)",
    )
    p.add_argument(
        "--versus",
        default=None,
        metavar="METHOD",
        help="with --format sources: also the paired difference to METHOD's rows without a source",
    )
    p.add_argument("--out", type=file_path("out"), default=None, help="write the output to this file, not stdout")
    add_fixedk_files(
        p, "instead: fixed-K results files, shown beside Mars-Bench's published numbers (table or markdown)"
    )
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.set_defaults(handler=cmd_leaderboard)


def cmd_leaderboard(args) -> int:
    import sys

    from benchmark.console import console, stdout
    from benchmark.leaderboard import (
        FORMATS,
        inductive_only,
        leaderboard,
        load_results,
        print_tables,
        rich_tables,
        to_sources,
        to_transductive,
    )
    from common.errors import UserError

    if args.fixedk:
        return cmd_published(args)
    rows, merged = load_results(args.csv)
    if args.versus and args.format != "sources":
        raise UserError("--versus goes with --format sources")
    if args.inductive_only:
        if args.format == "transductive":
            raise UserError("--inductive-only leaves nothing for --format transductive to compare")
        rows = inductive_only(rows)
    board = leaderboard(rows)
    if args.format == "table":
        if args.out:
            raise UserError("--out needs --format csv, markdown, json or summary")
        print_tables(stdout, rich_tables(board))
    else:
        text = (
            to_sources(rows, args.versus)
            if args.format == "sources"
            else to_transductive(rows)
            if args.format == "transductive"
            else FORMATS[args.format](board)
        )
        if args.out:
            try:
                atomic_write_text(Path(args.out), text)
            except OSError as exc:
                raise UserError(f"cannot write {args.out} ({exc.strerror})") from None
        else:
            sys.stdout.write(text)
    console.print(
        f"{len(rows)} episode rows from {len(merged['files'])} file(s)"
        + (f", {merged['duplicates']} duplicate rows dropped" if merged["duplicates"] else "")
        + (f"; written to {args.out}" if args.out else ""),
        highlight=False,
    )
    return 0


def cmd_published(args) -> int:
    from benchmark.console import stdout
    from benchmark.leaderboard import print_tables
    from benchmark.published import comparison, markdown, rich_tables
    from common.errors import UserError

    if args.csv:
        raise UserError("--fixedk takes the fixed-K files itself; give episode CSVs without --fixedk")
    blocks = comparison(args.fixedk)
    if args.format == "table" and not args.out:
        print_tables(stdout, rich_tables(blocks))
    elif args.format in ("table", "markdown"):
        if args.out:
            atomic_write_text(Path(args.out), markdown(blocks))
        else:
            stdout.print(markdown(blocks), highlight=False, markup=False)
    else:
        raise UserError("--fixedk shows a table or markdown; use --format table or markdown")
    return 0

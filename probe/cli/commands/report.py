"""`probe report` and `probe analyze`: for analysts."""

from __future__ import annotations

import argparse
import sys

from probe.cli.commands import EXIT_OK, fail


def command_report(args: argparse.Namespace) -> int:
    import duckdb

    from probe.report.build import build_report, close, write_report
    from probe.report.load import Filters, ReportInputError
    from probe.report.sentences import LANGUAGES, TemplateError, counted, load_template

    since, until = args.since, args.until
    try:
        if args.month:
            since, until = Filters.for_month(args.month)
        filters = Filters(since, until, args.network, args.target, args.all_confidence, getattr(args, "tz", None),
                          args.month)  # fmt: skip
        con = duckdb.connect()
        try:
            report = build_report(
                con, args.paths, filters, tuple(args.language) or LANGUAGES, args.engine, args.memory_limit,
                args.spark_master, args.spark_exchange,
            )  # fmt: skip
            text = write_report(report, con, args.format, args.out)
        finally:
            close(con)
    except (ReportInputError, TemplateError, ValueError) as exc:
        return fail(str(exc))
    except OSError as exc:
        return fail(f"cannot write the report: {exc}")
    if text is not None:
        sys.stdout.write(text)
    for message in report.problems.messages():
        print(f"probe report: {message}", file=sys.stderr)
    if text is None:
        english = load_template("en")
        print(
            f"{counted('episode', len(report.episodes), english)} from "
            f"{counted('measurement', report.measurements, english)}; written to "
            f"{args.out or ('report.html' if args.format == 'html' else 'report-parquet')}",
            file=sys.stderr,
        )
    return EXIT_OK


def command_analyze(args: argparse.Namespace) -> int:
    from probe.loaders.asn import load_asn_table
    from probe.loaders.catalogs import load_catalogs
    from probe.loaders.roots import load_roots
    from probe.results.rejudge import other_roots_warning, rejudge_paths
    from probe.vocabulary.errors import InputError

    try:
        catalogs = load_catalogs(args.catalog)
        roots = load_roots(args.roots)
        asn_table = load_asn_table(args.asn_db) if args.asn_db else None
        written = rejudge_paths(args.paths, roots, catalogs, asn_table)
    except InputError as exc:  # a catalog, roots, an AS table, a records file
        return fail(str(exc))
    warning = other_roots_warning(written, roots)
    if warning:
        print(f"probe analyze: {warning}", file=sys.stderr)  # once, before the changes it explains
    for source, target, counts, _other in written:
        changes = ", ".join(f"{k}: {v}" for k, v in sorted(counts.items())) or "no record"
        print(f"{source} -> {target} ({changes})")
    return EXIT_OK

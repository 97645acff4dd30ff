"""The command line: `python -m catalog <command>` (also the `catalog` console script).

Parses arguments, builds the service from the settings the Functions app reads, calls one
operation, prints the result (text, or JSON with --json) and maps errors to one line and an exit
status. The operations themselves are plain functions: operations.py, verify.py, reindex.py,
transfer.py.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import textwrap
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import CatalogError, NotFoundError, SchemaMismatchError, SettingsError, StorageError, ValidationError
from ..settings import Schema, Settings, load_app_settings, parse_bool
from ..wal import shard_partition
from .progress import NO_PROGRESS, Progress, ProgressBar

EXIT_OK, EXIT_PROBLEM, EXIT_ERROR, EXIT_INTERRUPTED = 0, 1, 2, 130

MAIN_EPILOG = """\
also: python -m catalog serve [--help] runs the function app locally (the dev host).

settings: the Functions app's own (AzureWebJobsStorage or CATALOG_STORAGE, CATALOG_TABLE,
CATALOG_INDEX_KEYS, CATALOG_ROW_KEY, ...), read from the Values of ./local.settings.json when
there is one (or --settings PATH), overridden by environment variables. So the same command works
against Azurite and against Azure.

exit status: 0 done; 1 done, but found a problem (drift, rejected rows, entries that cannot be
indexed, shards that stopped); 2 could not run (settings, storage, arguments); 130 interrupted.

examples:
  python -m catalog status
  python -m catalog verify --repair
  python -m catalog import products.jsonl --apply
  python -m catalog export --out products.jsonl
  CATALOG_TABLE=catalogv2 python -m catalog status --json
"""


# -- output --------------------------------------------------------------------------------------
def _n(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else str(value)


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 120:
        return f"{value:.1f} s"
    if value < 7200:
        return f"{value / 60:.1f} min"
    return f"{value / 3600:.1f} h"


def format_status(v: dict) -> str:
    s = v["schema"]
    lines = [
        f"schema      index keys: {', '.join(s['index_keys'])}   row key: {s['row_key']}   "
        f"case-sensitive: {str(s['case_sensitive']).lower()}",
        f"tables      index: {s['table']}   WAL: {s['wal_table']}",
    ]
    queues = [f"{q['name']}: {_n(q['depth'])} messages" for q in (v.get("queue"), v.get("poison_queue")) if q]
    lines.append("queues      " + ("   ".join(queues) if queues else "none"))
    oldest = v.get("oldest_pending_age_seconds")
    at_least = "at least " if v.get("pending_at_least") else ""
    lines.append(f"pending     {at_least}{_n(v['pending'])} operations"
                 + (f" (oldest {_seconds(oldest)} old)" if oldest else ""))
    lines.append(f"failed      {_n(v['failed_operations'])} operations")
    for f in v.get("latest_failures", []):
        lines.append(f"  {f['operation']}  {f.get('at') or ''}  {f.get('reason') or ''}")
    built = v.get("index_table")
    if built:
        lines.append(f"built by    reindex from {built['wal_table']}: {built['state']}, up to {built['until'] or '-'}")
    lines.append("")
    lines.append(f"{'shard':6} {'checkpoint':44} {'lag':>10} {'pending':>8}")
    for shard in v["shards"]:
        lines.append(f"{shard['shard']:6} {shard['checkpoint'] or '-':44} {_seconds(shard['lag_seconds']):>10} "
                     f"{('>=' if shard.get('pending_at_least') else '') + _n(shard['pending']):>8}")
    return "\n".join(lines)


def format_verify(v: dict) -> str:
    scope = f" (records changed after {v['since']})" if v["since"] else ""
    lines = [f"verified {v['table']}{scope}: {_n(v['wal_entries'])} WAL entries, {_n(v['identities'])} records, "
             f"{_n(v['index_entities'])} index entities",
             f"missing {_n(v['missing'])}   extra {_n(v['extra'])}   stale {_n(v['stale'])}   "
             f"(pending {_n(v['pending'])}, newer than the scan {_n(v['newer_than_scan'])}, "
             f"unusable WAL entries {_n(v['unusable_entries'])})"]
    for d in v["samples"]:
        lines.append(f"  {d['kind']:8} {d['field']}={d['value']!r} row={d['row']!r}  index {d['index_stamp'] or '-'}"
                     f"  wal {d['wal_stamp'] or '-'}  {d['reason']}")
    if v["drift"] > len(v["samples"]):
        lines.append(f"  ... {v['drift'] - len(v['samples'])} more (--show N lists more)")
    for u in v["unusable_samples"]:
        lines.append(f"  unusable {u['wal_stamp']}  {u['reason']}")
    if v["repaired"] is not None:
        lines.append(f"repaired {_n(v['repaired'])} of {_n(v['drift'])}")
        lines.extend(f"  not repaired: {why}" for why in v["repair_skipped"])
    lines.extend(f"note: {n}" for n in v["notes"])
    if v["drift"] == 0:
        lines.append("result: the index matches the WAL")
    elif v["repaired"] is not None and v["repaired"] == v["drift"] and not v["repair_skipped"]:
        lines.append("result: drift found and repaired")
    else:
        lines.append("result: DRIFT (run with --repair to fix it)" if v["repaired"] is None
                     else "result: DRIFT remains")
    return "\n".join(lines)


def format_reindex(v: dict) -> str:
    lines = [f"reindexed {v['table']} with {v['schema']}",
             f"  from the WAL of a deployment with {v['source_schema']}",
             f"  {_n(v['entries'])} WAL entries applied" + (f" (resumed after {v['resumed_after']})"
                                                             if v["resumed_after"] else "")
             + f", {_n(v['index_entities_changed'])} index entities written in {_seconds(v['seconds'])}",
             f"  state: {v['state']}, up to {v['until']}"]
    if v["records_removed_by_source_identity"]:
        lines.append(f"  {_n(v['records_removed_by_source_identity'])} records removed by a later put or delete of "
                     "their source identity")
    for u in v["unindexable_samples"]:
        lines.append(f"  cannot index {u['wal_stamp']}: {u['reason']}")
    lines.extend(f"note: {n}" for n in v["notes"])
    return "\n".join(lines)


def format_import(v: dict) -> str:
    lines = [f"imported {v['file']} ({v['format']}): {_n(v['rows'])} rows, {_n(v['accepted'])} accepted, "
             f"{_n(v['rejected'])} rejected; {_n(v['operations'])} operations, {v['mode']}"]
    if v["operations"]:
        lines.append(f"  operations {v['first_operation']} .. {v['last_operation']}")
    for r in v["rejected_samples"]:
        lines.append(f"  line {r['line']}: {r['reason']}")
    if v["rejected"] > len(v["rejected_samples"]):
        lines.append(f"  ... {v['rejected'] - len(v['rejected_samples'])} more")
    if v["rejected_file"]:
        lines.append(f"  rejected rows (line, reason, row): {v['rejected_file']}")
    if v["mode"] != "applied" and v["accepted"]:
        lines.append("  the function app applies them (`catalog status` shows what is pending; "
                     "`catalog recover` applies them without it)")
    if v["error"]:
        lines.append(f"error: {v['error']}")
    return "\n".join(lines)


def format_recover(v: dict) -> str:
    lines = [f"recovered: {_n(v['operations'])} operations, {_n(v['entries'])} entries applied, "
             f"{_n(v['failed'])} failed, {_n(v['changed'])} index entities changed"]
    if v["stopped_shards"]:
        lines.append("  stopped early (storage errors; run again): "
                     + ", ".join(shard_partition(s) for s in v["stopped_shards"]))
    marks = set(v["checkpoints"].values())
    if len(marks) == 1 and len(v["checkpoints"]) > 1:
        lines.append(f"  checkpoints of {len(v['checkpoints'])} shards advanced to {marks.pop()}")
    elif v["checkpoints"]:
        lines.append("  checkpoints advanced: " + ", ".join(f"{k} {c}" for k, c in v["checkpoints"].items()))
    return "\n".join(lines)


# -- the commands --------------------------------------------------------------------------------
@dataclass
class Context:
    args: argparse.Namespace
    env: Mapping[str, str]
    cwd: Path

    @property
    def out(self):
        return sys.stdout

    @property
    def err(self):
        return sys.stderr

    def settings(self) -> Settings:
        return Settings.from_env(load_app_settings(self.args.settings, self.env, self.cwd))

    def service(self, *, create: bool = False):
        """The service on the configured tables. Only commands that write (`create`) may start a new
        catalog: a read-only command with a mistyped setting must not create tables or lock a schema."""
        from ..bootstrap import build_service

        settings = self.settings()
        service = build_service(settings, ensure=False)
        if not create and not service.wal.schema_locks():
            raise NotFoundError(f"no catalog in WAL table {settings.wal_table!r} of {settings.storage!r}: nothing "
                                "has been written with these settings (check CATALOG_TABLE, CATALOG_WAL_TABLE and "
                                "the storage setting)")
        return service.ensure()

    def progress(self) -> Progress:
        if self.args.no_progress:
            return NO_PROGRESS
        return ProgressBar(self.err)

    def emit(self, view: dict, text: Callable[[dict], str], stream=None) -> None:
        stream = stream or self.out
        if self.args.json:
            stream.write(json.dumps(view, ensure_ascii=False, default=str, indent=2) + "\n")
        else:
            stream.write(text(view) + "\n")
        stream.flush()


def cmd_status(ctx: Context) -> int:
    from .status import status

    ctx.emit(status(ctx.service()), format_status)
    return EXIT_OK


def cmd_verify(ctx: Context) -> int:
    from .verify import verify

    a = ctx.args
    report = verify(ctx.service(), since=a.since, show=a.show, repair=a.repair, progress=ctx.progress())
    ctx.emit(report.view(), format_verify)
    if report.drift == 0 or report.clean_after_repair:
        return EXIT_OK
    return EXIT_PROBLEM


def cmd_reindex(ctx: Context) -> int:
    from .reindex import reindex

    a = ctx.args
    service = ctx.service()
    schema = None
    if a.index_keys is not None or a.row_key is not None or a.case_sensitive is not None:
        current = service.schema
        schema = Schema.parse(a.index_keys if a.index_keys is not None else list(current.index_keys),
                              a.row_key if a.row_key is not None else current.row_key,
                              parse_bool("--case-sensitive", a.case_sensitive, current.case_sensitive),
                              names=("--index-keys", "--row-key"))
    report = reindex(service, a.to, schema=schema, until=a.until, progress=ctx.progress(),
                     save_every=a.save_every)
    ctx.emit(report.view(), format_reindex)
    return EXIT_PROBLEM if report.unindexable else EXIT_OK


def cmd_import(ctx: Context) -> int:
    from .transfer import detect_format, import_file

    a = ctx.args
    detect_format(a.file, a.format)  # a wrong name or format fails before storage is contacted
    if not Path(a.file).is_file():
        raise FileNotFoundError(2, "no such file", a.file)
    service = ctx.service(create=True)
    report = import_file(service, a.file, fmt=a.format, apply_now=a.apply, batch_size=a.batch_size,
                         rejected_path=a.rejected, progress=ctx.progress())
    ctx.emit(report.view(), format_import)
    if report.error:
        return EXIT_ERROR
    return EXIT_PROBLEM if report.rejected else EXIT_OK


def cmd_export(ctx: Context) -> int:
    from .transfer import export_records

    a = ctx.args
    service = ctx.service()
    if a.out and a.out != "-":
        with open(a.out, "wb") as f:
            count = export_records(service, f, progress=ctx.progress())
        ctx.emit({"records": count, "out": a.out}, lambda v: f"exported {_n(v['records'])} records to {v['out']}")
    else:
        out = ctx.out
        binary = getattr(out, "buffer", None)
        out.flush()
        count = export_records(service, binary if binary is not None else _TextSink(out), progress=ctx.progress())
        (binary or out).flush()
        ctx.emit({"records": count, "out": "-"}, lambda v: f"exported {_n(v['records'])} records", stream=ctx.err)
    return EXIT_OK


class _TextSink:
    """A binary-looking front for a text stream without a buffer (rare: some embedding hosts)."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, data: bytes) -> int:
        return self.stream.write(data.decode("utf-8"))

    def flush(self) -> None:
        self.stream.flush()


def cmd_recover(ctx: Context) -> int:
    from .status import recover

    result = recover(ctx.service(), ctx.args.since, progress=ctx.progress())
    ctx.emit(result.view(), format_recover)
    return EXIT_PROBLEM if result.stopped_shards else EXIT_OK


def cmd_changes(ctx: Context) -> int:
    from .feed import follow_changes

    a = ctx.args
    out = ctx.out
    binary = getattr(out, "buffer", None)
    sink = binary if binary is not None else _TextSink(out)
    count = follow_changes(ctx.service(), sink, after=a.after, since=a.since, follow=a.follow,
                           checkpoint=Path(a.checkpoint) if a.checkpoint else None)
    if not a.follow:
        print(f"catalog: {_n(count)} changes", file=ctx.err)
    return EXIT_OK


# -- the parser ------------------------------------------------------------------------------------
def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be a positive integer")
    return value


class _HelpFormatter(argparse.HelpFormatter):
    """Wraps one-line paragraphs to the terminal; keeps paragraphs written on several lines (examples) as they are."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        paragraphs = []
        for paragraph in text.split("\n\n"):
            if "\n" in paragraph.strip("\n"):
                paragraphs.append("\n".join(indent + line for line in paragraph.splitlines()))
            else:
                paragraphs.append(textwrap.fill(paragraph, width, initial_indent=indent, subsequent_indent=indent))
        return "\n\n".join(paragraphs)


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    g = common.add_argument_group("common options")
    g.add_argument("--settings", metavar="PATH",
                   help="local.settings.json whose Values to read (default: ./local.settings.json if it exists); "
                        "environment variables override them")
    g.add_argument("--json", action="store_true", help="print the result as JSON (for scripts)")
    g.add_argument("--no-progress", action="store_true",
                   help="no progress bar (there is one only when stderr is a terminal)")
    g.add_argument("-v", "--verbose", action="store_true", help="log what the catalog does to stderr")
    g.add_argument("--traceback", action="store_true", help="on an error, show the Python traceback too")

    fmt = _HelpFormatter
    parser = argparse.ArgumentParser(prog="catalog", description="Operate an az-table-catalog deployment.",
                                     epilog=MAIN_EPILOG, formatter_class=fmt)
    sub = parser.add_subparsers(dest="command", metavar="command")

    p = sub.add_parser("status", parents=[common], formatter_class=fmt, help="show the catalog's state",
                       description="The schema, each WAL shard's checkpoint and lag, pending and failed operations "
                                   "(with the latest failures' reasons) and the queue and poison-queue depths.",
                       epilog="examples:\n  python -m catalog status\n  python -m catalog status --json\n"
                              "  python -m catalog status --settings ../prod.settings.json")
    p.set_defaults(handler=cmd_status)

    p = sub.add_parser("verify", parents=[common], formatter_class=fmt, help="compare the index with the WAL",
                       description="Replay the WAL (or the part after --since) into the state the index should "
                                   "be in (for each record the entry with the highest stamp wins) and compare it "
                                   "with the index table: missing, extra and stale index entities are counted "
                                   "and the first --show of each listed. Exit status 1 on any drift.\n\n"
                                   "--repair writes the fixes through the normal apply path (the winning WAL "
                                   "entry, with its stamp). An extra entity, which no WAL entry explains, is "
                                   "deleted: the WAL is the source of truth. Entities of operations still "
                                   "pending are not drift (see `status`, or run `recover`).",
                       epilog="examples:\n  python -m catalog verify\n"
                              "  python -m catalog verify --since 2024-05-01T00:00:00Z --show 50\n"
                              "  python -m catalog verify --repair --json")
    p.add_argument("--since", metavar="TIME", help="only records with WAL entries after this ISO 8601 time "
                                                   "(extra entities cannot be found then)")
    p.add_argument("--show", metavar="N", type=int, default=20, help="list the first N of each kind (default 20)")
    p.add_argument("--repair", action="store_true", help="fix what differs; exit 0 if everything was fixed")
    p.set_defaults(handler=cmd_verify)

    p = sub.add_parser("reindex", parents=[common], formatter_class=fmt,
                       help="build an index table from the WAL (change the schema)",
                       description="Build the index table --to from the WAL, under the current schema or a new "
                                   "one (--index-keys/--row-key/--case-sensitive; what is not given stays as it "
                                   "is). The deployment keeps serving its own table meanwhile. Interrupted, it "
                                   "resumes where it stopped when run again; run again later, it catches up with "
                                   "what was accepted since. The new table records its schema; point "
                                   "CATALOG_TABLE and CATALOG_INDEX_KEYS/CATALOG_ROW_KEY at it to switch, then run "
                                   "it once more with --until the switch time (README: Changing the schema).\n\n"
                                   "Where the new schema identifies records by other fields, each entry of the "
                                   "current deployment still replaces its own record: the new table lists the "
                                   "same records as the old one.",
                       epilog="examples:\n  python -m catalog reindex --to catalogv2 --index-keys sku,category,brand\n"
                              "  python -m catalog reindex --to catalogv2          # resume, or catch up\n"
                              "  python -m catalog reindex --to catalogcopy        # same schema: a fresh copy\n"
                              "  python -m catalog reindex --to catalogv2 --until 2024-05-01T12:00:00Z")
    p.add_argument("--to", required=True, metavar="TABLE", help="the table to build (letters and digits)")
    p.add_argument("--index-keys", metavar="A,B", help="comma-separated index key fields of the new table")
    p.add_argument("--row-key", metavar="FIELD", help="row key field of the new table")
    p.add_argument("--case-sensitive", choices=["true", "false"], help="exact-case matching in the new table")
    p.add_argument("--until", metavar="TIME",
                   help="apply WAL entries up to this ISO 8601 time (default: CATALOG_SETTLE_SECONDS ago, "
                        "the sweep's settle window, so no entry still being written is passed over)")
    p.add_argument("--save-every", metavar="N", type=_positive, default=500,
                   help="save progress every N entries (default 500; also every 5 s)")
    p.set_defaults(handler=cmd_reindex)

    p = sub.add_parser("import", parents=[common], formatter_class=fmt, help="load records from a file",
                       description="Stream records from FILE (JSON Lines; a JSON array; CSV with a header row, "
                                   "whose values are all strings) through the same validation and WAL path as "
                                   "POST /api/records, in batches of up to 99 records (one entity-group "
                                   "transaction each). Each row is validated on its own: a bad row is rejected "
                                   "alone, written with its line number and reason to the rejected file, and "
                                   "the rest are imported. Exit status 1 if any row was rejected.\n\n"
                                   "By default the records are logged and enqueued, like an HTTP request: the "
                                   "function app applies them (fast; `status` shows what is pending, `recover` "
                                   "applies them without the app). --apply applies each batch before going on "
                                   "(slower; the records are queryable when the command ends).",
                       epilog="examples:\n  python -m catalog import products.jsonl\n"
                              "  python -m catalog import products.csv --apply\n"
                              "  python -m catalog import dump.txt --format json --rejected bad.jsonl")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--format", choices=["jsonl", "json", "csv"],
                   help="the file's format (default: from the extension .jsonl/.ndjson, .json, .csv)")
    p.add_argument("--apply", action="store_true", help="apply each batch now instead of enqueueing it")
    p.add_argument("--rejected", metavar="PATH", help="where rejected rows go (default: FILE.rejected.jsonl)")
    p.add_argument("--batch-size", metavar="N", type=_positive, default=99,
                   help="records per operation (default 99: one transaction with the header)")
    p.set_defaults(handler=cmd_import)

    p = sub.add_parser("export", parents=[common], formatter_class=fmt, help="write every record as JSON Lines",
                       description="Write every current record once, as JSON Lines, streamed (to stdout, or "
                                   "--out FILE). Records come out exactly as they were written.",
                       epilog="examples:\n  python -m catalog export --out products.jsonl\n"
                              "  python -m catalog export | gzip > products.jsonl.gz")
    p.add_argument("--out", metavar="FILE", help="write here instead of stdout")
    p.set_defaults(handler=cmd_export)

    p = sub.add_parser("recover", parents=[common], formatter_class=fmt, help="apply the WAL now",
                       description="Apply every WAL entry after each shard's checkpoint (or after --since, even "
                                   "operations already applied) up to now, as the timer sweep would, and advance "
                                   "the checkpoints. Exit status 1 if storage errors stopped a shard early.",
                       epilog="examples:\n  python -m catalog recover\n"
                              "  python -m catalog recover --since 2024-05-01T00:00:00Z --json")
    p.add_argument("--since", metavar="TIME", help="replay from this ISO 8601 time instead of the checkpoints")
    p.set_defaults(handler=cmd_recover)

    p = sub.add_parser("changes", parents=[common], formatter_class=fmt, help="the change feed, as JSON Lines",
                       description="Write every accepted put and delete, in order, one JSON object a line "
                                   "({position, operation, kind, record, time}), up to the frontier (the time "
                                   "before which no entry can still appear); with --follow, keep waiting for more. "
                                   "With --checkpoint FILE it starts after the position stored there and stores "
                                   "each position once its line is written, so a restarted consumer goes on "
                                   "where it stopped. SIGINT or SIGTERM stop it between two lines; after a "
                                   "harder stop (SIGKILL, power loss) the last line may come again: drop a line "
                                   "whose position is not above the last one seen. Output is JSON Lines with or "
                                   "without --json.",
                       epilog="examples:\n  python -m catalog changes --since 2024-05-01T00:00:00Z\n"
                              "  python -m catalog changes --follow --checkpoint pos.txt | my-indexer")
    start = p.add_mutually_exclusive_group()
    start.add_argument("--after", metavar="POSITION", help="start after this position (an item's `position`)")
    start.add_argument("--since", metavar="TIME", help="start at this ISO 8601 time")
    p.add_argument("--follow", action="store_true", help="keep waiting for new changes (stop with Ctrl-C)")
    p.add_argument("--checkpoint", metavar="FILE",
                   help="resume after the position stored in FILE (when it exists) and store each position written")
    p.set_defaults(handler=cmd_changes)
    return parser


# -- main ------------------------------------------------------------------------------------------
def _one_line(text: str, limit: int = 600) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _fail(ctx: Context, kind: str, message: str) -> int:
    message = _one_line(message)
    print(f"catalog: {message}", file=sys.stderr)
    if ctx.args.json:
        print(json.dumps({"error": message, "kind": kind}), file=sys.stdout)
    return EXIT_ERROR


class _CliLogHandler(logging.StreamHandler):
    """The handler -v adds; `catalog_cli` marks it so a second main() in one process adds no other."""

    catalog_cli = True


def _configure_logging(verbose: bool) -> None:
    # Without -v, Python's last-resort handler still prints the catalog's warnings to stderr.
    if verbose:
        logger = logging.getLogger("catalog")
        if not any(getattr(h, "catalog_cli", False) for h in logger.handlers):
            handler = _CliLogHandler(sys.stderr)
            handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
            logger.addHandler(handler)
        logger.setLevel(logging.INFO)


def main(argv: list[str] | None = None, *, env: Mapping[str, str] | None = None,
         cwd: str | Path | None = None) -> int:
    """Run one command. `env` replaces os.environ and `cwd` the directory local.settings.json is
    looked for in (tests pass both)."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        parser.print_help(sys.stderr)
        return EXIT_ERROR
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, or a usage error argparse already printed
        return e.code if isinstance(e.code, int) else EXIT_ERROR
    if getattr(args, "handler", None) is None:
        parser.print_help(sys.stderr)
        return EXIT_ERROR
    ctx = Context(args, os.environ if env is None else env, Path(cwd) if cwd is not None else Path.cwd())
    _configure_logging(args.verbose)
    try:
        return args.handler(ctx)
    except KeyboardInterrupt:
        hint = " (run it again to resume)" if args.command == "reindex" else ""
        print(f"catalog: interrupted{hint}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`export | head`): stop quietly, and keep Python from complaining at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError, AttributeError):
            pass
        return EXIT_OK
    except Exception as e:
        if args.traceback:
            raise
        if isinstance(e, SettingsError):
            return _fail(ctx, "settings", f"setting {e}")
        if isinstance(e, SchemaMismatchError):
            return _fail(ctx, "schema", str(e))
        if isinstance(e, NotFoundError):
            return _fail(ctx, "not_found", str(e))
        if isinstance(e, StorageError):
            return _fail(ctx, "storage", f"storage error: {e}")
        if isinstance(e, (ValidationError, CatalogError)):
            return _fail(ctx, "invalid", str(e))
        if isinstance(e, OSError):
            where = f"{e.filename}: " if e.filename else ""
            return _fail(ctx, "file", f"{where}{e.strerror or e}")
        return _fail(ctx, "internal", f"unexpected {type(e).__name__}: {e} (run again with --traceback for details)")

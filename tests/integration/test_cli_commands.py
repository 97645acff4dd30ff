"""The command line on a real Azurite: status, import, export, recover, errors, help, the subprocess entry point."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from azure.data.tables import TableServiceClient

from catalog import codec
from catalog.bootstrap import build_service
from catalog.settings import Settings
from catalog.tools.cli import main
from catalog.tools.progress import ProgressBar
from catalog.wal import PUT, PendingEntry
from tests.helpers import unique

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def run(env, tmp_path, capsys):
    """run(*args, env=None) -> (exit status, stdout, stderr), in-process, in an empty directory."""
    def call(*args: str, env_override: dict | None = None):
        code = main(list(args), env=env_override if env_override is not None else env, cwd=tmp_path)
        out, err = capsys.readouterr()
        return code, out, err
    return call


def service(env):
    return build_service(Settings.from_env(env))


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# -- status -----------------------------------------------------------------------------------------
def test_status_json_shows_pending_failed_and_queue_counts(run, env, tmp_path):
    records = tmp_path / "r.jsonl"
    write_lines(records, [json.dumps({"sku": f"s{i}", "category": "c", "name": f"n{i}"}) for i in range(5)])
    assert run("import", str(records), "--batch-size", "2")[0] == 0  # 3 operations, enqueued
    svc = service(env)
    # An operation the catalog can never apply (the record lost its key field): recover records it as failed.
    op_id, _ = svc.wal.new_operation_id()
    bad = svc.wal.entry_entities(op_id, [PendingEntry(PUT, codec.dumps({"sku": "x", "name": "no category"}))])
    svc.wal.append([*bad, svc.wal.header_entity(op_id, 1, PUT)])
    svc.poison_queue.send(json.dumps({"op": op_id}))

    code, out, _ = run("status", "--json")
    assert code == 0
    view = json.loads(out)
    assert view["schema"]["index_keys"] == ["sku", "category"] and view["schema"]["row_key"] == "name"
    assert view["pending"] == 4
    assert view["queue"] == {"name": svc.queue.name, "depth": 3}
    assert view["poison_queue"] == {"name": svc.poison_queue.name, "depth": 1}
    assert view["failed_operations"] == 0
    assert len(view["shards"]) == 16 and all(s["checkpoint"] is None for s in view["shards"])

    code, out, _ = run("recover", "--json")
    assert code == 0
    result = json.loads(out)
    assert result["operations"] == 4 and result["entries"] == 5 and result["failed"] == 1

    code, out, _ = run("status", "--json")
    view = json.loads(out)
    assert view["pending"] == 0
    assert view["failed_operations"] == 1
    [failure] = view["latest_failures"]
    assert failure["operation"] == op_id and "category" in failure["reason"]
    assert all(s["checkpoint"] for s in view["shards"])

    code, out, _ = run("status")
    assert code == 0
    assert "pending     0 operations" in out and "failed      1 operations" in out and op_id in out


def test_status_json_in_a_subprocess(env, tmp_path):
    """The installed entry point, as an operator runs it: settings from local.settings.json, overridden
    by the environment."""
    service(env)  # the catalog exists (the function app or an import would have created it)
    (tmp_path / "local.settings.json").write_text(json.dumps({"IsEncrypted": False, "Values": {
        **env, "CATALOG_INDEX_KEYS": "wrong", "CATALOG_CASE_SENSITIVE": False}}))
    proc_env = {k: v for k, v in os.environ.items() if not k.startswith(("CATALOG_", "AzureWebJobs"))}
    proc_env["CATALOG_INDEX_KEYS"] = "sku,category"  # the environment wins over the file
    proc = subprocess.run([sys.executable, "-m", "catalog", "status", "--json"], cwd=tmp_path, env=proc_env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    view = json.loads(proc.stdout)
    assert view["schema"]["table"] == env["CATALOG_TABLE"]
    assert view["schema"]["index_keys"] == ["sku", "category"]
    assert view["pending"] == 0 and view["queue"]["depth"] == 0
    assert "\r" not in proc.stderr  # no progress bar when stderr is not a terminal


# -- import -----------------------------------------------------------------------------------------
def test_import_rejects_bad_rows_alone_and_reports_their_lines(run, env, tmp_path):
    good = [{"sku": f"s{i}", "category": "c", "name": f"n{i}"} for i in range(7)]
    lines = [json.dumps(good[0]), json.dumps(good[1]),
             '{"sku": "broken", ',                                    # 3: not JSON
             json.dumps({"sku": "s", "name": "no category"}),         # 4: missing field
             json.dumps(good[2]),
             "",                                                      # blank lines are skipped
             json.dumps(["not", "an", "object"]),                     # 7
             json.dumps(good[3]),
             '{"sku": "n", "category": "c", "name": "x", "v": NaN}',  # 9: NaN is not JSON
             json.dumps({"sku": "k" * 600, "category": "c", "name": "x"}),  # 10: too long for a key
             json.dumps({"sku": {"nested": 1}, "category": "c", "name": "x"}),  # 11: key must be scalar
             *map(json.dumps, good[4:])]
    path = write_lines(tmp_path / "mixed.jsonl", lines)
    code, out, _ = run("import", str(path), "--apply", "--batch-size", "3", "--json")
    assert code == 1  # done, but some rows were rejected
    view = json.loads(out)
    assert view["rows"] == 13 and view["accepted"] == 7 and view["rejected"] == 6
    assert view["mode"] == "applied"
    rejected = [json.loads(line) for line in Path(view["rejected_file"]).read_text().splitlines()]
    assert view["rejected_file"] == str(path) + ".rejected.jsonl"
    assert [r["line"] for r in rejected] == [3, 4, 7, 9, 10, 11]
    assert "invalid JSON" in rejected[0]["reason"] and rejected[0]["text"] == '{"sku": "broken", '
    assert "category" in rejected[1]["reason"] and rejected[1]["record"] == {"sku": "s", "name": "no category"}
    assert "object" in rejected[2]["reason"]
    assert "too long" in rejected[4]["reason"]
    svc = service(env)
    assert sorted(svc.query_all({"category": "c"}), key=lambda r: r["name"]) == good


def test_import_streams_a_json_array_across_chunk_boundaries(run, env, tmp_path, monkeypatch):
    import catalog.tools.transfer as transfer

    monkeypatch.setattr(transfer, "CHUNK", 7)  # every element straddles the sliding window
    records = [{"sku": f"s{i}", "category": "c", "name": f"n{i}", "n": 10 ** 30 + i, "t": "日本\n🙂"}
               for i in range(5)]
    body = json.dumps(records[:2], indent=2, ensure_ascii=False)[:-2]
    body += ',\n  {"sku": "bad", "name": "no category"},\n  "a string",\n'
    body += json.dumps(records[2:], indent=2, ensure_ascii=False)[1:]
    path = tmp_path / "records.json"
    path.write_text(body, encoding="utf-8")
    code, out, _ = run("import", str(path), "--apply", "--json")
    view = json.loads(out)
    assert code == 1 and view["accepted"] == 5 and view["rejected"] == 2
    bad_line = body.splitlines().index('  {"sku": "bad", "name": "no category"},') + 1
    assert [s["line"] for s in view["rejected_samples"]] == [bad_line, bad_line + 1]
    assert sorted(service(env).query_all({"category": "c"}), key=lambda r: r["name"]) == records


def test_import_json_array_syntax_error_stops_at_its_line(run, env, tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('[\n{"sku": "a", "category": "c", "name": "1"},\n{"sku": "b", "category": "c" "name": "2"},\n'
                    '{"sku": "d", "category": "c", "name": "3"}\n]\n')
    code, out, err = run("import", str(path), "--apply", "--json")
    view = json.loads(out)
    assert code == 2
    assert view["accepted"] == 1 and "line 3" in view["error"]
    assert [r["sku"] for r in service(env).query_all({"category": "c"})] == ["a"]


def test_import_csv_values_are_strings(run, env, tmp_path):
    path = tmp_path / "products.csv"
    path.write_text('sku,category,name,note\n'
                    'A1,shoes,Runner,"multi\nline"\n'
                    'A2,shoes,Walker,ok,EXTRA\n'
                    'A3,shoes,Hiker\n'
                    '\n'
                    'A4,,Empty category,\n', encoding="utf-8")
    code, out, _ = run("import", str(path), "--apply", "--json")
    view = json.loads(out)
    assert code == 1 and view["accepted"] == 3 and view["rejected"] == 1
    assert view["rejected_samples"][0]["line"] == 4 and "5 cells" in view["rejected_samples"][0]["reason"]
    svc = service(env)
    assert svc.query_all({"sku": "A1"}) == [{"sku": "A1", "category": "shoes", "name": "Runner", "note": "multi\nline"}]
    assert svc.query_all({"sku": "A3"}) == [{"sku": "A3", "category": "shoes", "name": "Hiker"}]  # short row
    assert svc.query_all({"category": ""}) == [{"sku": "A4", "category": "", "name": "Empty category", "note": ""}]


# -- export -----------------------------------------------------------------------------------------
def test_export_round_trips_what_was_imported(run, env, tmp_path):
    records = [
        {"sku": "plain", "category": "c", "name": "a", "n": 1},
        {"sku": "odd/#?\\'", "category": "C", "name": "O'Brien", "PartitionKey": "pk", "RowKey": "rk",
         "Timestamp": "t", "etag": "e", "operation": "delete", "nested": {"l": [1, 2.5, None, True]},
         "big": 2 ** 100, "text": "日本語 🙂\u2028"},
        {"sku": "s3", "category": "c", "name": "replaced", "version": 1},
        {"sku": "s4", "category": "c", "name": "deleted"},
    ]
    path = write_lines(tmp_path / "in.jsonl", [json.dumps(r) for r in records])
    assert run("import", str(path), "--apply")[0] == 0
    newer = {"sku": "s3", "category": "c", "name": "replaced", "version": 2}
    write_lines(tmp_path / "again.jsonl", [json.dumps(newer)])
    assert run("import", str(tmp_path / "again.jsonl"), "--apply")[0] == 0
    assert service(env).delete({"sku": "s4"}, apply_now=True).count == 1

    out_path = tmp_path / "out.jsonl"
    code, out, _ = run("export", "--out", str(out_path), "--json")
    assert code == 0 and json.loads(out) == {"records": 3, "out": str(out_path)}
    raw = out_path.read_bytes()
    raw.decode("utf-8")  # a valid UTF-8 file
    exported = [json.loads(line) for line in raw.decode("utf-8").splitlines()]
    key = lambda r: r["sku"]  # noqa: E731
    assert sorted(exported, key=key) == sorted([records[0], records[1], newer], key=key)

    # ... and back in: a fresh catalog imported from the export exports the same records.
    other = dict(env, CATALOG_TABLE=unique("t"))
    assert run("import", str(out_path), "--apply", env_override=other)[0] == 0
    code, out, err = run("export", env_override=other)
    assert code == 0 and "exported 3 records" in err
    assert sorted(map(json.loads, out.splitlines()), key=key) == sorted(exported, key=key)


# -- recover ----------------------------------------------------------------------------------------
def test_enqueued_import_is_applied_by_recover(run, env, tmp_path):
    path = write_lines(tmp_path / "r.jsonl", [json.dumps({"sku": f"s{i}", "category": "c", "name": f"n{i}"})
                                              for i in range(10)])
    code, out, _ = run("import", str(path))
    assert code == 0 and "enqueued for the function app" in out
    svc = service(env)
    assert svc.query_all({"category": "c"}) == []  # nothing applied yet: the function app would
    code, out, _ = run("recover")
    assert code == 0 and "1 operations, 10 entries applied" in out
    assert len(svc.query_all({"category": "c"})) == 10
    code, out, _ = run("recover", "--since", "2000-01-01T00:00:00Z", "--json")
    assert code == 0 and json.loads(out)["entries"] == 10  # replays applied operations too, harmlessly
    assert len(svc.query_all({"category": "c"})) == 10


# -- errors, help, entry point ----------------------------------------------------------------------
def test_missing_setting_is_named_without_a_traceback(run, env):
    code, out, err = run("status", env_override={k: v for k, v in env.items() if k != "CATALOG_INDEX_KEYS"})
    assert code == 2
    assert err.strip().count("\n") == 0 and "CATALOG_INDEX_KEYS" in err and "Traceback" not in err
    code, out, err = run("status", "--json", env_override={"CATALOG_INDEX_KEYS": "a", "CATALOG_ROW_KEY": "b"})
    assert code == 2 and json.loads(out)["kind"] == "settings" and "AzureWebJobsStorage" in err


@pytest.mark.parametrize("command", ["status", "verify", "export", "recover"])
def test_read_only_commands_do_not_create_a_catalog(run, env, command):
    """A mistyped CATALOG_TABLE must not create tables or lock a schema."""
    code, out, err = run(command)
    assert code == 2 and "no catalog in WAL table" in err and env["CATALOG_TABLE"] in err
    tables = TableServiceClient.from_connection_string(env["AzureWebJobsStorage"])
    assert [t.name for t in tables.list_tables() if t.name.startswith(env["CATALOG_TABLE"])] == []


def test_unreachable_storage_is_one_line_and_exit_2(run, env):
    closed = ("DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=a2V5;"
              "TableEndpoint=http://127.0.0.1:9/devstoreaccount1;QueueEndpoint=http://127.0.0.1:9/devstoreaccount1;")
    code, out, err = run("verify", env_override=dict(env, AzureWebJobsStorage=closed))
    assert code == 2
    assert err.startswith("catalog: storage error:") and err.count("\n") == 1 and "Traceback" not in err


def test_settings_file_option(run, env, tmp_path):
    service(env)
    settings = tmp_path / "elsewhere.json"
    settings.write_text(json.dumps({"Values": env}))
    code, out, _ = run("status", "--json", "--settings", str(settings), env_override={})
    assert code == 0 and json.loads(out)["schema"]["table"] == env["CATALOG_TABLE"]
    code, _, err = run("status", "--settings", str(tmp_path / "missing.json"), env_override={})
    assert code == 2 and "missing.json" in err


@pytest.mark.parametrize("command", ["status", "verify", "reindex", "import", "export", "recover"])
def test_every_command_has_help_with_examples(run, command):
    code, out, _ = run(command, "--help")
    assert code == 0 and "examples:" in out and "--json" in out


def test_usage_errors_exit_2(run, tmp_path):
    assert run()[0] == 2
    code, _, err = run("import", str(tmp_path / "missing.jsonl"))
    assert code == 2 and "missing.jsonl" in err
    code, _, err = run("import", str(tmp_path / "records.txt"))
    assert code == 2 and "--format" in err
    assert run("frobnicate")[0] == 2
    assert run("reindex")[0] == 2  # --to is required


def test_serve_still_reaches_the_dev_host(monkeypatch):
    import devhost.serve
    from catalog.__main__ import main as entry

    seen = []
    monkeypatch.setattr(devhost.serve, "main", lambda argv: seen.append(argv) or 0)
    assert entry(["serve", "--port", "7072"]) == 0
    assert seen == [["--port", "7072"]]


def test_progress_bar_only_on_a_terminal():
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    ticks = iter(range(100))
    screen = Terminal()
    bar = ProgressBar(screen, clock=lambda: next(ticks), interval=0)
    bar.begin("import", 1000, "entries")
    bar.advance(250)
    bar.end()
    text = screen.getvalue()
    assert "\r" in text and "25.0%" in text and "entries/s" in text and "ETA" in text and text.endswith("\n")

    pipe = io.StringIO()
    bar = ProgressBar(pipe)
    bar.begin("import", 10)
    bar.advance(5)
    bar.end()
    assert pipe.getvalue() == ""


@pytest.mark.parametrize("chunk", [1, 2, 3, 5, 64])
def test_json_reader_is_exact_whatever_the_window(monkeypatch, chunk):
    import catalog.tools.transfer as transfer

    monkeypatch.setattr(transfer, "CHUNK", chunk)
    rows = list(transfer.read_json(io.StringIO('[\n 1, 2345,\n {"a": [1, 2], "b": "]},"},\n "x"\n]\n')))
    assert [(r.line, r.record) for r in rows] == [(2, 1), (2, 2345), (3, {"a": [1, 2], "b": "]},"}), (4, "x")]
    assert [r.record for r in transfer.read_json(io.StringIO('{"a": 1}\n{"b": 2}\n'))] == [{"a": 1}, {"b": 2}]
    assert list(transfer.read_json(io.StringIO("[]"))) == []
    for broken, line in (('[1,\n2\n3]', 3), ('[1, 2', 1), ('[1] x', 1), ('[1,,2]', 1)):
        with pytest.raises(transfer.MalformedFileError) as e:
            list(transfer.read_json(io.StringIO(broken)))
        assert e.value.line == line, broken

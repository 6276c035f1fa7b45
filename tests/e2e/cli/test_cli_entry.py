"""`hallmark entry …` against a real `hallmark up`: SPIRE's flags, output, exit codes, batches."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from tests.e2e.cli.conftest import CliTenant, Hallmark, entry_ids, unique

pytestmark = [pytest.mark.e2e]


def test_entry_create_show_update_count_delete_as_spire_prints_them(
    hallmark: Hallmark, cli_a: CliTenant
) -> None:
    # given a parent no other test uses
    parent = cli_a.id(unique("node"))
    # when an entry is created with every SPIRE flag
    created = hallmark(
        cli_a.token,
        "entry", "create",
        "-spiffeID", cli_a.id("web"),
        "-parentID", parent,
        "-selector", "unix:uid:1000",
        "-selector", "unix:gid:1000",
        "-x509SVIDTTL", "1200",
        "-jwtSVIDTTL", "120",
        "-dns", "web.example.org",
        "-federatesWith", "spiffe://partner.example",
        "-admin",
        "-downstream",
        "-hint", "blue",
        "-entryExpiry", "4102444800",
    )  # fmt: skip
    # then it prints the entry as spire-server does
    assert created.code == 0, created.err
    [entry_id] = entry_ids(created.out)
    for line in (
        f"SPIFFE ID        : {cli_a.id('web')}",
        f"Parent ID        : {parent}",
        "X509-SVID TTL    : 1200",
        "JWT-SVID TTL     : 120",
        "Selector         : unix:gid:1000",
        "Selector         : unix:uid:1000",
        "FederatesWith    : partner.example",
        "DNS name         : web.example.org",
        "Admin            : true",
        "Downstream       : true",
        "Hint             : blue",
        "Expiration time  : 2100-01-01T00:00:00Z",
    ):
        assert line in created.out
    # and show, update, count and delete work on it
    shown = hallmark(cli_a.token, "entry", "show", "-entryID", entry_id)
    assert shown.code == 0 and shown.out.startswith("Found 1 entry\n\n")
    assert f"Entry ID         : {entry_id}" in shown.out
    updated = hallmark(
        cli_a.token, "entry", "update", "-entryID", entry_id,
        "-x509SVIDTTL", "600", "-admin=false", "-entryExpiry", "0",
    )  # fmt: skip
    assert updated.code == 0, updated.err
    assert "X509-SVID TTL    : 600" in updated.out
    assert _revision(updated.out) > _revision(created.out)
    assert "Admin" not in updated.out and "Expiration time" not in updated.out
    assert "Selector         : unix:uid:1000" in updated.out  # unchanged fields stay
    counted = hallmark(cli_a.token, "entry", "count", "-parentID", parent)
    assert (counted.code, counted.out) == (0, "1 registration entry\n")
    deleted = hallmark(cli_a.token, "entry", "delete", "-entryID", entry_id)
    assert (deleted.code, deleted.out) == (0, f"Deleted entry with ID: {entry_id}\n")
    assert hallmark(cli_a.token, "entry", "show", "-parentID", parent).out == "Found 0 entries\n"


def _revision(text: str) -> int:
    [line] = [line for line in text.splitlines() if line.startswith("Revision         : ")]
    return int(line.rsplit(" ", 1)[1])


def test_entry_output_json_is_the_api_documents(hallmark: Hallmark, cli_a: CliTenant) -> None:
    parent = cli_a.id(unique("node"))
    created = hallmark(
        cli_a.token, "entry", "create", "-output", "json",
        "-spiffeID", cli_a.id("db"), "-parentID", parent, "-selector", "unix:uid:7",
    )  # fmt: skip
    assert created.code == 0, created.err
    [result] = created.json()["results"]
    assert result["status"]["code"] == "ok"
    entry = result["entry"]
    assert (entry["spiffe_id"], entry["selectors"]) == (cli_a.id("db"), ["unix:uid:7"])
    shown = hallmark(cli_a.token, "entry", "show", "-parentID", parent, "--output=json")
    assert shown.json() == {"entries": [entry]}
    counted = hallmark(cli_a.token, "entry", "count", "-parentID", parent, "-output=json")
    assert counted.json() == {"count": 1}
    deleted = hallmark(cli_a.token, "entry", "delete", "-entryID", entry["id"], "-output", "json")
    assert deleted.json()["results"][0]["status"]["code"] == "ok"


def test_go_style_and_double_dash_flags_are_the_same(hallmark: Hallmark, cli_a: CliTenant) -> None:
    parent = cli_a.id(unique("node"))
    created = hallmark(
        cli_a.token, "entry", "create",
        f"--spiffeID={cli_a.id('go')}", f"-parentID={parent}",
        "--selector", "unix:uid:1", "-selector=unix:uid:2", "--admin=true", "-downstream=false",
    )  # fmt: skip
    assert created.code == 0, created.err
    assert "Selector         : unix:uid:1\n" in created.out
    assert "Selector         : unix:uid:2\n" in created.out
    assert "Admin            : true" in created.out and "Downstream" not in created.out


def test_unknown_entry_exits_1_with_the_apis_code(hallmark: Hallmark, cli_a: CliTenant) -> None:
    missing = str(uuid.uuid4())
    shown = hallmark(cli_a.token, "entry", "show", "-entryID", missing)
    assert shown.code == 1 and shown.out == ""
    assert shown.err.startswith("hallmark entry show: not_found: ") and "(HTTP 404)" in shown.err
    as_json = hallmark(cli_a.token, "entry", "show", "-entryID", missing, "-output", "json")
    assert as_json.code == 1 and as_json.error()["code"] == "not_found"
    updated = hallmark(cli_a.token, "entry", "update", "-entryID", missing, "-hint", "x")
    assert updated.code == 1 and "code: not_found" in updated.err
    deleted = hallmark(cli_a.token, "entry", "delete", "-entryID", missing)
    assert deleted.code == 1
    assert f"Failed to delete entry with ID {missing} (code: not_found" in deleted.err


def test_bad_selector_exits_1_with_the_apis_code_and_stores_nothing(
    hallmark: Hallmark, cli_a: CliTenant
) -> None:
    parent = cli_a.id(unique("node"))
    created = hallmark(
        cli_a.token, "entry", "create",
        "-spiffeID", cli_a.id("bad"), "-parentID", parent, "-selector", "no-colon",
    )  # fmt: skip
    assert created.code == 1 and created.out == ""
    assert "Failed to create the following entry (code: invalid_selector" in created.err
    assert "Entry ID         : (none)" in created.err
    as_json = hallmark(
        cli_a.token, "entry", "create", "-output", "json",
        "-spiffeID", cli_a.id("bad"), "-parentID", parent, "-selector", "no-colon",
    )  # fmt: skip
    assert as_json.code == 1
    assert as_json.json()["results"][0]["status"]["code"] == "invalid_selector"
    assert hallmark(cli_a.token, "entry", "count", "-parentID", parent).out == (
        "0 registration entries\n"
    )


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["entry", "create", "-spiffeID", "spiffe://x.test/a", "-parentID", "spiffe://x.test/n"],
         "at least one -selector is required"),
        (["entry", "create", "-selector", "unix:uid:1"], "-spiffeID and -parentID required"),
        (["entry", "create", "-entryID", "e1", "-spiffeID", "spiffe://x.test/a"],
         "-entryID is for update"),
        (["entry", "create", "-bogus"], "unrecognized arguments: -bogus"),
        (["entry", "create", "-x509SVIDTTL", "soon"], "invalid int value"),
        (["entry", "create", "-admin=perhaps"], "'perhaps' is not true or false"),
        (["entry", "update", "-hint", "x"], "-entryID is required"),
        (["entry", "update", "-entryID", "e1"], "nothing to change"),
        (["entry", "delete"], "give -entryID ID or -file FILE"),
        (["entry", "show", "-matchSelectorsOn", "some"], "invalid choice: 'some'"),
        (["entry", "frobnicate"], "invalid choice: 'frobnicate'"),
    ],
)  # fmt: skip
def test_usage_errors_exit_2_and_say_what_to_do(
    hallmark: Hallmark, cli_a: CliTenant, argv: list[str], says: str
) -> None:
    run = hallmark(cli_a.token, *argv)
    assert run.code == 2 and run.out == ""
    assert says in run.err


def test_data_batches_create_update_and_delete_with_a_result_per_entry(
    hallmark: Hallmark, cli_a: CliTenant, tmp_path: Path
) -> None:
    # given SPIRE's registration JSON, selectors as {type, value}, one entry bad
    parent = cli_a.id(unique("node"))
    document = {
        "entries": [
            {
                "spiffe_id": cli_a.id("batch/one"),
                "parent_id": parent,
                "selectors": [{"type": "unix", "value": "uid:1"}],
                "x509_svid_ttl": 900,
                "admin": True,
            },
            {
                "spiffe_id": cli_a.id("batch/bad"),
                "parent_id": parent,
                "selectors": [{"type": "unix", "value": "uid:2"}],
                "dns_names": ["not a name"],
            },
            {
                "spiffe_id": cli_a.id("batch/two"),
                "parent_id": parent,
                "selectors": ["k8s:ns:prod", "k8s:sa:api"],
                "federates_with": ["spiffe://partner.example"],
                "entryExpiry": 4102444800,
            },
        ]
    }
    data = tmp_path / "entries.json"
    data.write_text(json.dumps(document))
    # when they are created from -data
    created = hallmark(cli_a.token, "entry", "create", "-data", str(data))
    # then the good ones are stored and printed, the bad one is reported with its code: exit 1
    assert created.code == 1
    one, two = entry_ids(created.out)
    assert "Failed to create the following entry (code: invalid_dns_name" in created.err
    assert f"SPIFFE ID        : {cli_a.id('batch/bad')}" in created.err
    assert hallmark(cli_a.token, "entry", "count", "-parentID", parent).out == (
        "2 registration entries\n"
    )
    # when both are updated from -data on stdin (entry_id names each)
    changes = {
        "entries": [
            {"entry_id": one, "x509_svid_ttl": 300, "revision_number": 0},
            {"entry_id": two, "hint": "green"},
        ]
    }
    updated = hallmark(cli_a.token, "entry", "update", "-data", "-", stdin=json.dumps(changes))
    assert updated.code == 0, updated.err
    assert entry_ids(updated.out) == [one, two]
    assert "X509-SVID TTL    : 300" in updated.out and "Hint             : green" in updated.out
    # and deleted with -file {"ids": [...]}, an unknown id failing alone
    ids = tmp_path / "ids.json"
    missing = str(uuid.uuid4())
    ids.write_text(json.dumps({"ids": [one, missing, two]}))
    deleted = hallmark(cli_a.token, "entry", "delete", "-file", str(ids))
    assert deleted.code == 1
    assert deleted.out == f"Deleted entry with ID: {one}\nDeleted entry with ID: {two}\n"
    assert f"Failed to delete entry with ID {missing} (code: not_found" in deleted.err


def test_data_that_is_not_spires_format_is_a_usage_error(
    hallmark: Hallmark, cli_a: CliTenant, tmp_path: Path
) -> None:
    data = tmp_path / "entries.json"
    for content, says in (
        ("not json", "is not JSON"),
        ('{"entries": []}', "with at least one entry"),
        ('{"entries": [{"spiffe_id": "spiffe://x.test/a", "colour": "red"}]}',
         "unknown field 'colour'"),
        ('{"entries": [{"selectors": [42]}]}', "a selector is"),
    ):  # fmt: skip
        data.write_text(content)
        run = hallmark(cli_a.token, "entry", "create", "-data", str(data))
        assert (run.code, run.out) == (2, ""), content
        assert says in run.err, (content, run.err)
    data.write_text('{"entries": [{"hint": "x"}]}')
    run = hallmark(cli_a.token, "entry", "update", "-data", str(data))
    assert run.code == 2 and "names no entry_id" in run.err
    run = hallmark(cli_a.token, "entry", "create", "-data", str(data), "-hint", "y")
    assert run.code == 2 and "drop -hint or drop -data" in run.err


def test_show_filters_as_spire_does(hallmark: Hallmark, cli_a: CliTenant) -> None:
    # given three entries under one parent
    parent = cli_a.id(unique("node"))
    for path, selectors, extra in (
        ("f/one", ["unix:uid:1", "unix:gid:1"], ["-hint", "h1"]),
        ("f/two", ["unix:uid:1"], ["-federatesWith", "spiffe://partner.example", "-downstream"]),
        ("f/three", ["unix:uid:3"], []),
    ):
        argv = ["entry", "create", "-spiffeID", cli_a.id(path), "-parentID", parent, *extra]
        for selector in selectors:
            argv += ["-selector", selector]
        assert hallmark(cli_a.token, *argv).code == 0

    def shown(*flags: str) -> list[str]:
        run = hallmark(cli_a.token, "entry", "show", "-parentID", parent, "-output", "json", *flags)
        assert run.code == 0, run.err
        return sorted(e["spiffe_id"].rsplit("/", 1)[1] for e in run.json()["entries"])

    # then each filter selects what SPIRE's would
    assert shown() == ["one", "three", "two"]
    assert shown("-selector", "unix:uid:1") == ["one", "two"]  # superset (the default)
    assert shown("-selector", "unix:uid:1", "-matchSelectorsOn", "exact") == ["two"]
    assert shown("-selector", "unix:gid:1", "-selector", "unix:uid:3",
                 "-matchSelectorsOn", "any") == ["one", "three"]  # fmt: skip
    assert shown("-selector", "unix:uid:1", "-selector", "unix:uid:3",
                 "-matchSelectorsOn", "subset") == ["three", "two"]  # fmt: skip
    assert shown("-spiffeID", cli_a.id("f/three")) == ["three"]
    assert shown("-federatesWith", "spiffe://partner.example") == ["two"]
    assert shown("-hint", "h1") == ["one"]
    assert shown("-downstream") == ["two"]
    assert shown("-downstream=false") == ["one", "three"]
    count = hallmark(cli_a.token, "entry", "count", "-parentID", parent, "-selector", "unix:uid:1")
    assert count.out == "2 registration entries\n"


def test_a_tenants_cli_token_never_sees_or_touches_another_tenants_entries(
    hallmark: Hallmark, cli_a: CliTenant, cli_b: CliTenant
) -> None:
    # given an entry of tenant B, made with B's token
    parent = cli_b.id(unique("node"))
    made = hallmark(
        cli_b.token, "entry", "create", "-output", "json",
        "-spiffeID", cli_b.id("secret"), "-parentID", parent, "-selector", "unix:uid:5",
    )  # fmt: skip
    b_entry = made.json()["results"][0]["entry"]
    # when tenant A's token looks for it every way the CLI can
    everything = hallmark(cli_a.token, "entry", "show", "-output", "json")
    assert b_entry["id"] not in everything.out and cli_b.trust_domain not in everything.out
    assert hallmark(cli_a.token, "entry", "show", "-parentID", parent).out == "Found 0 entries\n"
    assert hallmark(cli_a.token, "entry", "count", "-spiffeID", cli_b.id("secret")).out == (
        "0 registration entries\n"
    )
    by_id = hallmark(cli_a.token, "entry", "show", "-entryID", b_entry["id"])
    assert by_id.code == 1 and "not_found" in by_id.err
    # and tries to change or delete it
    updated = hallmark(cli_a.token, "entry", "update", "-entryID", b_entry["id"], "-hint", "x")
    assert updated.code == 1 and "code: not_found" in updated.err
    deleted = hallmark(cli_a.token, "entry", "delete", "-entryID", b_entry["id"])
    assert deleted.code == 1 and "code: not_found" in deleted.err
    # then B's entry is as it was
    again = hallmark(cli_b.token, "entry", "show", "-entryID", b_entry["id"], "-output", "json")
    assert again.json() == {"entries": [b_entry]}

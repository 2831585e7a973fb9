"""natter.envdoc: the environment-variable table generated from the settings models."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import pytest
from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from typer.testing import CliRunner

from natter.cli import app
from natter.envdoc import (
    BEGIN_MARKER,
    END_MARKER,
    SETTINGS_MODELS,
    env_vars,
    load_model,
    markdown_table,
    render_markdown,
    replace_block,
)

DEPLOY_DOC = Path(__file__).resolve().parents[2] / "docs" / "deploy.md"


class Sample(BaseSettings):
    """A model with one field of each kind the renderer handles."""

    model_config = SettingsConfigDict(env_prefix="NATTER_SAMPLE_", extra="ignore")

    url: str = Field(
        default="nats://x:1",
        validation_alias=AliasChoices("NATS_URL", "NATTER_NATS_URL"),
        description="Where | NATS is.",
    )
    mode: Literal["a", "b"] = "a"
    count: int = Field(default=3, ge=1, le=9, description="How many.")
    ratio: float | None = Field(default=None, gt=0)
    names: list[str] = Field(default_factory=list)
    token: str = Field(default_factory=lambda: "random", min_length=1, max_length=8)
    flag: bool = False


def test_rows_of_a_model() -> None:
    rows = {row.names[0]: row for row in env_vars(Sample)}
    assert list(rows) == [
        "NATS_URL",
        "NATTER_SAMPLE_MODE",
        "NATTER_SAMPLE_COUNT",
        "NATTER_SAMPLE_RATIO",
        "NATTER_SAMPLE_NAMES",
        "NATTER_SAMPLE_TOKEN",
        "NATTER_SAMPLE_FLAG",
    ]
    assert rows["NATS_URL"].names == ("NATS_URL", "NATTER_NATS_URL")
    assert (rows["NATS_URL"].default, rows["NATS_URL"].description) == ("`nats://x:1`", "Where | NATS is.")
    assert rows["NATTER_SAMPLE_MODE"].type == "one of a, b"
    assert (rows["NATTER_SAMPLE_COUNT"].type, rows["NATTER_SAMPLE_COUNT"].default) == (
        "int (>= 1, <= 9)",
        "`3`",
    )
    assert (rows["NATTER_SAMPLE_RATIO"].type, rows["NATTER_SAMPLE_RATIO"].default) == (
        "float or unset (> 0)",
        "(unset)",
    )
    assert (rows["NATTER_SAMPLE_NAMES"].type, rows["NATTER_SAMPLE_NAMES"].default) == (
        "JSON list of str",
        "`[]`",
    )
    # A factory that may be random is not called: the docs must not change from run to run.
    assert (rows["NATTER_SAMPLE_TOKEN"].type, rows["NATTER_SAMPLE_TOKEN"].default) == (
        "str (length 1..8)",
        "(generated)",
    )
    assert rows["NATTER_SAMPLE_FLAG"].default == "`false`"
    assert [row.names[0] for row in env_vars(Sample, skip=frozenset({"url", "flag"}))] == [
        "NATTER_SAMPLE_MODE",
        "NATTER_SAMPLE_COUNT",
        "NATTER_SAMPLE_RATIO",
        "NATTER_SAMPLE_NAMES",
        "NATTER_SAMPLE_TOKEN",
    ]


def test_every_setting_of_every_process_is_in_the_table() -> None:
    table = render_markdown()
    common = load_model(SETTINGS_MODELS[0][1])
    for _, path in SETTINGS_MODELS:
        model = load_model(path)
        for row in env_vars(model):
            assert f"| `{row.names[0]}`" in table, (path, row.names)
    # Common settings appear once, not once per process.
    for row in env_vars(common):
        assert table.count(f"| `{row.names[0]}`") == 1, row.names
    assert "NATTER_GATEWAY_ALLOWED_ORIGINS" in table and "NATTER_AUTH_ACCESS_TTL_SECONDS" in table
    assert render_markdown() == table  # deterministic


def test_markdown_table() -> None:
    lines = markdown_table(env_vars(Sample)).splitlines()
    assert lines[:2] == ["| Variable | Type | Default | Description |", "|---|---|---|---|"]
    assert lines[2] == "| `NATS_URL` (or `NATTER_NATS_URL`) | str | `nats://x:1` | Where \\| NATS is. |"
    assert lines[3] == "| `NATTER_SAMPLE_MODE` | one of a, b | `a` |   |"
    assert len(lines) == 2 + len(Sample.model_fields)


def test_replace_block() -> None:
    document = f"# Title\n\nintro\n\n{BEGIN_MARKER}\nold table\n{END_MARKER}\n\nafter\n"
    updated = replace_block(document, "| new |\n")
    assert updated == f"# Title\n\nintro\n\n{BEGIN_MARKER}\n\n| new |\n\n{END_MARKER}\n\nafter\n"
    assert replace_block(updated, "| new |\n") == updated
    with pytest.raises(ValueError, match="markers not found"):
        replace_block("no markers here", "| new |\n")
    with pytest.raises(ValueError, match="markers not found"):
        replace_block(f"{END_MARKER}\n{BEGIN_MARKER}\n", "| new |\n")


def test_deploy_doc_holds_the_current_table() -> None:
    """docs/deploy.md must be regenerated (natter env-doc --update docs/deploy.md) after a change."""
    document = DEPLOY_DOC.read_text()
    assert replace_block(document, render_markdown()) == document, (
        "docs/deploy.md is out of date: run `natter env-doc --update docs/deploy.md`"
    )


def test_cli_prints_and_updates(tmp_path: Path) -> None:
    runner = CliRunner()
    printed = runner.invoke(app, ["env-doc"])
    assert printed.exit_code == 0, printed.output
    assert printed.output == render_markdown()

    target = tmp_path / "doc.md"
    target.write_text(f"top\n{BEGIN_MARKER}\nstale\n{END_MARKER}\nbottom\n")
    updated = runner.invoke(app, ["env-doc", "--update", str(target)])
    assert updated.exit_code == 0, updated.output
    text = target.read_text()
    assert "stale" not in text and render_markdown() in text
    assert text.startswith("top\n") and text.endswith(f"{END_MARKER}\nbottom\n")

    target.write_text("no markers\n")
    failed = runner.invoke(app, ["env-doc", "--update", str(target)])
    assert failed.exit_code == 1
    assert target.read_text() == "no markers\n"

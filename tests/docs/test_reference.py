"""Nothing reaches the reference undocumented: every command and option has help, every
setting a comment, every proto element a comment. And the checks do catch what is missing."""

from __future__ import annotations

import importlib.util
import textwrap

import click

from scripts.docs_reference import cli, config, proto


def test_every_command_and_option_has_help_text():
    assert cli.undocumented() == []


def test_every_setting_has_a_comment_above_its_field():
    assert config.undocumented() == []


def test_every_proto_service_method_message_field_and_enum_has_a_comment():
    assert proto.undocumented() == []


def test_the_reference_covers_every_command_setting_and_proto_element():
    page = cli.page("edge-agent")
    assert "`edge-agent data import`" in page and "`--label COLUMN`" in page
    reference = config.page()
    assert "`max_batch_rows`" in reference and "`SILOLINK_AGENT_INFERENCE__MAX_BATCH_ROWS`" in reference
    assert "`SILOLINK_COORDINATOR_EXCHANGE__MAX_TTL_S`" in reference
    items = proto.elements()
    by_package = proto.packages(items)
    admin = proto.page("silolink.admin.v1", by_package["silolink.admin.v1"])
    assert "### AdminService" in admin and "| `token_ttl_s` | 4 | `uint32` |" in admin
    # Types from other packages link to the page that defines them.
    assert "(silolink.common.v1.md#silolink.common.v1.SiteKind)" in admin


def test_an_uncommented_proto_field_is_reported(tmp_path):
    folder = tmp_path / "acme" / "v1"
    folder.mkdir(parents=True)
    (folder / "x.proto").write_text(
        textwrap.dedent(
            """
            syntax = "proto3";
            package silolink.acme.v1;
            // Thing is a thing.
            message Thing {
              // The name.
              string name = 1;
              int32 size = 2;
            }
            """
        )
    )
    missing = proto.undocumented(proto.elements(proto.descriptor_set(tmp_path)))
    assert missing == ["acme/v1/x.proto: field silolink.acme.v1.Thing.size has no comment"]


def test_a_command_or_option_without_help_is_reported(monkeypatch):
    @click.group(help="A tool.")
    def tool():
        pass

    @tool.command()
    @click.option("--level")
    def bare(level):
        pass

    monkeypatch.setattr(cli, "roots", lambda: {"tool": tool})
    assert cli.undocumented() == [
        "tool bare: the command has no help text",
        "tool bare --level: the option has no help text",
    ]


def test_a_setting_without_a_comment_is_reported(tmp_path, monkeypatch):
    path = tmp_path / "fake_config.py"
    path.write_text(
        textwrap.dedent(
            '''
            import dataclasses

            @dataclasses.dataclass(frozen=True)
            class CoordinatorConfig:
                """Settings."""

                # Where to listen.
                listen: str = "0.0.0.0:7443"
                workers: int = 4

            @dataclasses.dataclass(frozen=True)
            class AgentConfig:
                """Settings."""

                # The site.
                site: str = ""
            '''
        )
    )
    spec = importlib.util.spec_from_file_location("fake_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(config, "_config_module", lambda: module)
    assert config.undocumented() == ["coordinator.toml workers: no comment above the field in silolink/config.py"]

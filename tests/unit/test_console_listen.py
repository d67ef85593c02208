"""Turning the console on without naming an address serves it on loopback only."""

import pytest
from click.testing import CliRunner

from silolink.config import ConsoleConfig, console_listen
from silolink.settings import SettingError


def test_the_console_is_off_by_default_and_on_loopback_when_enabled_without_an_address():
    assert ConsoleConfig().address == ""
    assert ConsoleConfig(enabled=True).address == "127.0.0.1:7445"
    assert ConsoleConfig(listen="10.0.0.5:7445").address == "10.0.0.5:7445"  # an address turns it on
    assert ConsoleConfig(enabled=True, listen="[::1]:9000").address == "[::1]:9000"
    with pytest.raises(SettingError, match="listen"):
        ConsoleConfig(listen="7445")  # the file takes HOST:PORT; the flag also takes a port alone


def test_a_port_alone_on_the_command_line_means_loopback():
    assert console_listen("7445") == "127.0.0.1:7445"
    assert console_listen(":0") == "127.0.0.1:0"
    assert console_listen("0.0.0.0:7445") == "0.0.0.0:7445"  # said explicitly: the operator's choice


def test_serve_refuses_a_console_address_it_cannot_use(tmp_path):
    from cloud_coordinator.cli import main
    from tests import support

    support.init_coordinator(tmp_path)
    answer = CliRunner().invoke(main, ["serve", "--data-dir", str(tmp_path), "--console-listen", "nowhere:port"])
    assert answer.exit_code != 0 and "--console-listen" in answer.output

"""How ``cloud-coordinator train`` shows a job and reads --hidden."""

import click
import pytest

from cloud_coordinator.cli.training import HiddenLayers, show


def job(**spec):
    return {
        "job": "j1",
        "state": "completed",
        "spec": {
            "app": "tabular",
            "dataset": "patients",
            "strategy": "fedavg",
            "rounds": 2,
            "sites": ["kind=x"],
            **spec,
        },
        "rounds": [],
        "error": "",
        "privacy": None,
        "model": "patients-tabular:1",
    }


def test_a_job_shows_its_hidden_layers_only_when_it_has_some(capsys):
    show(job(hidden_units=[64, 32]))
    assert "app tabular on patients, fedavg, hidden layers 64,32, 0/2 rounds" in capsys.readouterr().out
    show(job(hidden_units=[]))
    assert "fedavg, 0/2 rounds" in capsys.readouterr().out


def test_hidden_layers_are_read_as_a_comma_separated_list():
    kind = HiddenLayers()
    assert kind.convert("64,32", None, None) == [64, 32]
    assert kind.convert("", None, None) == []
    with pytest.raises(click.BadParameter, match="not a comma-separated list of layer sizes"):
        kind.convert("64,x", None, None)

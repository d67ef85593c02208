"""What an app at a site can reach of the site's data: through the data helper, only the
columns the site allows it (sensitive ones per ``[catalog] sensitive_for_apps``); around
the helper, no catalog path, source location or credential in its node_config, run_config,
environment or working directory. Real agents, real bundles, real worker processes."""

from __future__ import annotations

import json
import os

import pytest

from edge_agent.catalog.store import Catalog
from silolink import errors
from silolink.config import CatalogConfig, TrainingConfig
from silolink_demo import datasets
from tests.conftest import SECRET_IN_ENVIRONMENT
from tests.flower_app_builders import write_app
from tests.integration.test_apps_host import ask, install

# The app reports everything it was handed, then what the data helper gives it.
LOOKING_APP = """
import json
import os

from flwr.app import ConfigRecord, Message, RecordDict
from flwr.clientapp import ClientApp

from edge_agent.apps.data import load_dataset
from edge_agent.catalog.reading import open_dataset

app = ClientApp()


@app.train()
def train(msg, context):
    reader = open_dataset(context.node_config)
    data = load_dataset(context)
    refused = {}
    for column in ("mean_radius", "mean_texture"):
        try:
            load_dataset(context, features=[column])
            refused[column] = ""
        except Exception as e:
            refused[column] = type(e).__name__ + ": " + str(e)
    seen = {
        "node_config": dict(context.node_config),
        "run_config": dict(context.run_config),
        "environment": dict(os.environ),
        "cwd": os.getcwd(),
        "dataset": {"source": reader.dataset.source, "location": reader.dataset.location,
                    "options": reader.dataset.options, "sensitive": list(reader.dataset.sensitive)},
        "columns": [c.name for c in reader.columns],
        "features": list(data.features),
        "shape": list(data.X.shape),
        "refused": refused,
    }
    return Message(RecordDict({"seen": ConfigRecord({"json": json.dumps(seen)})}), reply_to=msg)
"""


@pytest.fixture(autouse=True)
def _identity(flower_server_identity):
    """The test process creates Flower Messages as a ServerApp process would."""


@pytest.fixture
def site(make_agent, tmp_path):
    """A hospital whose patients table has two sensitive columns; the app ``allowed-app``
    may read one of them (mean_texture), every other app neither."""
    agent = make_agent(
        "hospital-a",
        training=TrainingConfig(datasets=("patients",), message_timeout_s=30),
        catalog=CatalogConfig(sensitive_for_apps=("allowed-app=patients.mean_texture",)),
    )
    _, parts = datasets.breast_cancer_splits(["hospital-a"])
    source = datasets.write_csv(tmp_path / "a.csv", parts["hospital-a"])
    catalog = Catalog.open(agent.layout.catalog_db)
    catalog.import_csv(source, "patients", label="diagnosis", id_column="patient_id")
    catalog.mark_sensitive("patients", ["mean_radius", "mean_texture"])
    return agent


def look(coordinator, site, tmp_path, app: str) -> dict:
    install(site, write_app(tmp_path / app, app, client=LOOKING_APP))
    content = ask(coordinator, f"job-{app}", app)
    return json.loads(content.config_records["seen"]["json"])


def test_an_app_gets_only_the_sensitive_columns_the_site_allows_it(coordinator, site, tmp_path):
    allowed = look(coordinator, site, tmp_path, "allowed-app")
    other = look(coordinator, site, tmp_path, "other-app")
    # Allowed: mean_texture is a column and a default feature; mean_radius is neither.
    assert "mean_texture" in allowed["columns"] and "mean_texture" in allowed["features"]
    assert "mean_radius" not in allowed["columns"] and "mean_radius" not in allowed["features"]
    assert allowed["refused"]["mean_texture"] == "" and allowed["shape"][1] == 29
    # Not allowed: neither column, not even its name; asking for one is refused by the agent.
    assert not {"mean_radius", "mean_texture"} & {*other["columns"], *other["features"]}
    assert other["shape"][1] == 28 and other["dataset"]["sensitive"] == []
    for column in ("mean_radius", "mean_texture"):
        assert other["refused"][column].startswith("PermissionDenied: ")
        assert "marked sensitive at this site and not allowed for this app" in other["refused"][column]
    assert allowed["refused"]["mean_radius"].startswith("PermissionDenied: ")


def test_an_app_is_handed_no_path_location_or_credential_of_the_site(coordinator, site, tmp_path):
    seen = look(coordinator, site, tmp_path, "other-app")
    assert seen["node_config"] == {"dataset": "patients", "silolink-site": "agent"}
    assert seen["dataset"] == {"source": "", "location": "", "options": {}, "sensitive": []}
    # The secret conftest put in the agent's environment before any worker existed is gone.
    assert os.environ["SILOLINK_TEST_DB_PASSWORD"] == SECRET_IN_ENVIRONMENT
    assert "SILOLINK_TEST_DB_PASSWORD" not in seen["environment"]
    handed = json.dumps({k: seen[k] for k in ("node_config", "run_config", "environment", "dataset")})
    for secret in (SECRET_IN_ENVIRONMENT, str(site.layout.root), str(site.layout.catalog_db), "catalog.db"):
        assert secret not in handed
    assert set(seen["environment"]) <= {"PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "TZ", "TMPDIR",
                                        "TMP", "TEMP", "TERM", "VIRTUAL_ENV", "PYTHONHASHSEED", "PYTHONIOENCODING",
                                        "PYTHONUTF8", "CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES",
                                        "HIP_VISIBLE_DEVICES"} | {k for k in seen["environment"]
                                        if k.startswith(("LC_", "OMP_", "MKL_", "OPENBLAS_", "NUMEXPR_"))}  # fmt: skip


def test_a_hidden_column_asked_for_around_the_helper_is_refused_by_the_agent(coordinator, site, tmp_path):
    """The app's own request, made without the helper's courtesy check, meets the agent's."""
    raw = LOOKING_APP.replace(
        "    reader = open_dataset(context.node_config)",
        "    from edge_agent.catalog import reading\n"
        "    reading._agent_request({'op': 'scan', 'columns': ['mean_radius'], 'present': [],"
        " 'batch_rows': 10})\n"
        "    reader = open_dataset(context.node_config)",
    )
    install(site, write_app(tmp_path / "raw", "raw-app", client=raw))
    with pytest.raises(errors.PermissionDenied, match="'mean_radius' of dataset 'patients' is marked sensitive"):
        ask(coordinator, "job-raw", "raw-app")

"""One contract, run against an in-memory database and a file."""

import pytest

from cloud_coordinator.sites.store import CertificateRecord, SiteRecord, SiteStore, TokenRecord
from silolink.db import open_database


@pytest.fixture(params=["memory", "file"])
def store(request, tmp_path):
    db = open_database(None if request.param == "memory" else tmp_path / "state" / "c.db")
    yield SiteStore(db)
    db.close()


def test_sites_round_trip_sorted(store):
    store.add_site(SiteRecord("hospital-b", "hospital", {"region": "north"}, created_at=2.0))
    store.add_site(SiteRecord("factory-a", "factory", created_at=1.0))
    names = [s.name for s in store.list_sites()]
    assert names == ["factory-a", "hospital-b"]
    site = store.get_site("hospital-b")
    assert site.tags == {"region": "north"} and site.enrolled_at is None
    assert store.get_site("nope") is None


def test_update_site_stores_json_fields(store):
    store.add_site(SiteRecord("hospital-a", "hospital", created_at=1.0))
    store.update_site("hospital-a", resources={"cpu_count": 4}, version="1.2", last_heartbeat=5.0)
    site = store.get_site("hospital-a")
    assert site.resources == {"cpu_count": 4} and site.version == "1.2" and site.last_heartbeat == 5.0


def test_a_new_token_replaces_the_unused_one(store):
    store.add_site(SiteRecord("hospital-a", "hospital", created_at=1.0))
    store.put_token(TokenRecord("h1", "hospital-a", 1.0, 10.0, None))
    store.put_token(TokenRecord("h2", "hospital-a", 2.0, 10.0, None))
    assert store.get_token("h1") is None
    assert store.get_token("h2").site == "hospital-a"
    store.mark_token_used("h2", 3.0)
    assert store.get_token("h2").used_at == 3.0


def test_atomic_block_rolls_back_everything(store):
    store.add_site(SiteRecord("hospital-a", "hospital", created_at=1.0))
    with pytest.raises(RuntimeError):
        with store.atomic():
            store.update_site("hospital-a", enrolled_at=2.0)
            store.add_certificate(CertificateRecord("ab", "agent", "hospital-a", 2.0, 3.0))
            raise RuntimeError("crash mid-enrollment")
    assert store.get_site("hospital-a").enrolled_at is None
    assert store.certificates() == []


def test_revoking_certificates_marks_only_that_name_and_role(store):
    store.add_certificate(CertificateRecord("01", "agent", "hospital-a", 1.0, 9.0))
    store.add_certificate(CertificateRecord("02", "agent", "hospital-b", 1.0, 9.0))
    store.add_certificate(CertificateRecord("03", "operator", "hospital-a", 1.0, 9.0))
    store.revoke_certificates("hospital-a", "agent", 5.0)
    revoked = {c.serial for c in store.certificates() if c.revoked_at is not None}
    assert revoked == {"01"}


def test_migrations_are_idempotent(store):
    SiteStore(store.db)  # re-applying must not fail or duplicate
    assert [m.name for m in store.migrations.applied(store.db)] == ["m001_sites"]

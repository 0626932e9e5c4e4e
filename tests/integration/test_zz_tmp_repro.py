import httpx, pytest
from tests.conftest import FakeFactory, GatewayFactory
from tests.support.servers import provider_env

@pytest.mark.parametrize("i", range(15))
def test_repro(make_fake: FakeFactory, make_gateway: GatewayFactory, i):
    fake = make_fake({"k0": {}, "k1": {}})
    gw = make_gateway({**provider_env("alpha", fake, ["k0", "k1"]), "DATABASE_URL": "sqlite+aiosqlite:////nonexistent-dir/x.db"})
    r = httpx.post(gw.base_url + "/api/chat", json={"messages": [{"role": "user", "content": "hi"}]}, headers={"X-User-Id": "u1"})
    assert r.status_code == 200
    gw.stop()

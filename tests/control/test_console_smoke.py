from _support.console import login, seed_run


def test_smoke(client, make_tenant, make_token):
    make_tenant("acme")
    agent = make_token("agent", "acme")
    admin = make_token("admin")
    seed_run(client, agent, tenant="acme", project="p1", run="r1")
    seed_run(client, agent, tenant="acme", project="p1", run="r2", fail="boom")
    csrf = login(client, admin)
    for url in [
        "/admin",
        "/tenants/acme",
        "/projects/p1",
        "/runs/r1",
        "/runs/r2",
        "/export",
        "/export/runs.csv",
    ]:
        r = client.get(url)
        print(url, r.status_code)
        assert r.status_code == 200, r.get_data(as_text=True)[:3000]
    print(client.get("/export/runs.csv").get_data(as_text=True))
    r = client.post("/tenants/acme/pause", data={"csrf_token": csrf, "reason": "test"})
    assert r.status_code == 303, r.get_data(as_text=True)
    r = client.get("/openapi.json")
    assert r.status_code == 200

from tests.conftest import BASE, ApiClient


def test_create_and_get(api: ApiClient) -> None:
    created = api.request(
        "POST", BASE, {"name": "Daily", "cronExpression": "0 9 * * *", "cronTimezone": "Europe/Berlin"}
    )
    assert created.status == 201, created.body
    got = api.request("GET", f"{BASE}/{created.body['id']}")
    assert got.status == 200, got.body
    assert got.body["nextRunAt"] == "2026-11-27T08:00:00Z"
    assert len(got.body["upcomingRuns"]) == 5

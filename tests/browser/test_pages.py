"""The operator pages in headless Chromium: every role sees them render with data and update live."""

import pytest

from tests.browser.conftest import ROLES, SCREENSHOTS

# The module's server and data are committed by the live_site fixture; the mark makes pytest-django set up
# the test database (each test itself only reads).
pytestmark = [pytest.mark.slow, pytest.mark.django_db]
WAIT_MS = 45_000


def _detail_urls(site):
    from facility.models import GPU, CoolingUnit

    gpu = GPU.objects.select_related("node").filter(node__rack__hall__name="hall-b").order_by("node__hostname",
                                                                                              "index").first()
    return {
        "gpu": f"/gpus/{gpu.uuid}/",
        "node": f"/nodes/{gpu.node.hostname}/",
        "rack": f"/racks/{gpu.node.rack_id}/",
        "unit": f"/cooling-units/{CoolingUnit.objects.get(site=site, name='cdu-b1').pk}/",
    }


def _wait_live(page):
    page.wait_for_selector("#live-status[data-state=live]", timeout=WAIT_MS)


def _check_live(page):
    _wait_live(page)
    page.wait_for_function(
        "document.querySelector('#kpi-total [data-kpi=it_power_kw] .v').textContent !== '—'", timeout=WAIT_MS)
    page.wait_for_function("document.querySelectorAll('tbody[data-hottest] a').length >= 2", timeout=WAIT_MS)
    # The KPI history (REST) is drawn, reaching back past the live tail.
    page.wait_for_function("document.getElementById('chart-power').dataset.points > 40 && "
                           "document.getElementById('chart-power').data[0].x[0] < new Date(Date.now() - 300e3)",
                           timeout=WAIT_MS)
    assert page.locator(".hall-live").count() == 2
    assert page.locator("#alarms li").count() >= 1
    pue = page.locator("#kpi-total [data-kpi=pue] .v").inner_text()
    assert 1.0 < float(pue) < 2.0


def _check_loop(page):
    _wait_live(page)
    for chart in ("chart-clock", "chart-tflops", "heatmap-0", "heatmap-1", "chart-eff-now", "chart-setpoints"):
        page.wait_for_function(f"(document.getElementById('{chart}') || {{dataset: {{}}}}).dataset.draws > 0",
                               timeout=WAIT_MS)
    points = page.evaluate("document.getElementById('chart-clock').data.reduce((n, t) => n + t.x.length, 0)")
    assert points >= 200  # one point per GPU that reported
    assert page.evaluate("document.getElementById('chart-clock').data[0].type") == "scattergl"
    for chart in ("chart-setpoints", "chart-eff-time"):
        page.wait_for_function(f"document.getElementById('{chart}').dataset.points > 20", timeout=WAIT_MS)


def _check_detail(page):
    _wait_live(page)
    page.wait_for_function("document.body.dataset.windowLoaded && "
                           "[...document.querySelectorAll('[data-chart]')].every(c => c.dataset.points > 0)",
                           timeout=WAIT_MS)


@pytest.mark.parametrize("role", ROLES)
def test_each_role_sees_each_page_with_data(login, live_site, role):
    page = login(role)
    urls = {"live": "/live/", "loop": "/loop/", **_detail_urls(live_site["site"])}
    checks = {"live": _check_live, "loop": _check_loop}
    for name, url in urls.items():
        response = page.goto(url)
        assert response.status == 200, (role, name)
        checks.get(name, _check_detail)(page)
        assert page.locator(".topbar .role", has_text=role).count() == 1
        if role == "viewer" or name in ("live", "loop"):
            page.screenshot(path=str(SCREENSHOTS / f"{role}-{name}.png"), full_page=True)


def test_charts_update_when_telemetry_arrives(login, live_site):
    page = login("viewer")
    page.goto(_detail_urls(live_site["site"])["gpu"])
    _check_detail(page)
    before = int(page.evaluate("document.getElementById('chart-temperature').dataset.points"))
    seq = int(page.evaluate("document.body.dataset.liveSeq"))
    # The twin reports every second: new points reach the chart through the socket, not a refetch.
    page.wait_for_function(f"document.getElementById('chart-temperature').dataset.points > {before} + 2",
                           timeout=WAIT_MS)
    assert int(page.evaluate("document.body.dataset.liveSeq")) > seq
    assert page.evaluate("document.body.dataset.windowLoaded") == "1"  # no REST refetch was needed

    # The user's zoom survives live updates (Plotly.react with a constant uirevision).
    page.evaluate("""() => {
        const c = document.getElementById('chart-temperature');
        const x = c.data[0].x;
        return Plotly.relayout(c, {'xaxis.range': [x[0], x[Math.floor(x.length / 2)]]});
    }""")
    zoomed = page.evaluate("document.getElementById('chart-temperature').layout.xaxis.range")
    draws = int(page.evaluate("document.getElementById('chart-temperature').dataset.draws"))
    page.wait_for_function(f"Number(document.getElementById('chart-temperature').dataset.draws) > {draws} + 1",
                           timeout=WAIT_MS)
    assert page.evaluate("document.getElementById('chart-temperature').layout.xaxis.range") == zoomed
    page.screenshot(path=str(SCREENSHOTS / "viewer-gpu-zoomed.png"), full_page=True)

    # The overview's KPIs move with the plant.
    page.goto("/live/")
    _check_live(page)
    seq = int(page.evaluate("document.body.dataset.liveSeq"))
    page.wait_for_function(f"Number(document.body.dataset.liveSeq) > {seq} + 2", timeout=WAIT_MS)


def test_range_picker_and_csv_export(login, live_site):
    page = login("operator")
    page.goto(_detail_urls(live_site["site"])["rack"])
    _check_detail(page)
    page.click("#range-picker button[data-range='1h']")
    page.wait_for_function("document.body.dataset.windowLoaded === '2'", timeout=WAIT_MS)
    assert page.get_attribute("#csv-export", "href").endswith("export.csv?range=1h")
    with page.expect_download() as download:
        page.click("#csv-export")
    path = download.value.path()
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[0].startswith("time,epoch_s,chart,trace") and len(lines) > 100
    page.click("#range-picker button[data-range='custom']")
    page.wait_for_selector("#range-picker .custom-range", state="visible")
    page.screenshot(path=str(SCREENSHOTS / "operator-rack-1h.png"), full_page=True)


def test_user_without_role_is_refused(login, live_site, browser):
    page = login(None)
    for url in ("/live/", "/loop/", "/models/", _detail_urls(live_site["site"])["gpu"]):
        assert page.goto(url).status == 403
    # The socket refuses too, with the code the page shows ("no permission").
    code = page.evaluate("""() => new Promise(resolve => {
        const ws = new WebSocket(`ws://${location.host}/ws/facilities/demo/live`);
        ws.onclose = (e) => resolve(e.code);
    })""")
    assert code == 4403
    anonymous = browser.new_context(base_url=live_site["base"]).new_page()
    anonymous.goto("/live/")
    assert "/login/" in anonymous.url
    anonymous.context.close()



@pytest.fixture(scope="module")
def served_forecaster(live_site, django_db_blocker, tmp_path_factory):
    """An active (untrained) forecaster served from the live plant for 25 s, committed for the server to see."""
    import time

    import torch

    from inference.checkpoint import save_checkpoint
    from inference.model import TelemetryForecaster
    from inference.models import ModelKind, ModelVersion
    from inference.serving import ForecastServer
    from inference.training import make_config

    torch.manual_seed(0)
    config = make_config(1.0, window=32, num_layers=2, hidden_size=32, intermediate_size=64, num_attention_heads=4)
    saved = save_checkpoint(TelemetryForecaster(config), tmp_path_factory.mktemp("models"), "browser-forecaster")
    targets = ("gpu_temperature_celsius", "sm_clock_megahertz", "power_watts")
    with django_db_blocker.unblock():
        version = ModelVersion.objects.create(
            name="browser-forecaster", kind=ModelKind.FORECASTER, site=live_site["site"], config=config.to_dict(),
            features=list(config.features), checkpoint_path=str(saved.weights), checksum_sha256=saved.sha256,
            training_curves=[{"epoch": e, "train_loss": 1 / e, "val_loss": 1.1 / e} for e in range(1, 6)],
            metrics={"horizons": {f"{h}s": {t: {"mae": 0.1 * h ** 0.5, "persistence_mae": 0.2 * h ** 0.5}
                                            for t in targets} for h in (10, 60, 300)},
                     "split": {"best_epoch": 4}},
            active=True)
        server = ForecastServer(worker="browser")
        deadline = time.monotonic() + 25  # the plant runs at 30x: 25 s of steps cover over 10 minutes of it
        while time.monotonic() < deadline:
            server.step()
            time.sleep(1)
    return version


def test_model_page_draws_forecasts_against_measurements(login, served_forecaster):
    """The active forecaster served from the live plant: curves, cache memory, forecast bands and errors."""
    page = login("approver")
    errors = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    assert page.goto("/models/").status == 200
    assert page.locator("#active-version", has_text="browser-forecaster").count() == 1
    for chart in ("chart-curves", "chart-cache", "chart-forecast-gpu_temperature_celsius",
                  "chart-error-gpu_temperature_celsius"):
        page.wait_for_selector(f"#{chart} .main-svg", timeout=WAIT_MS)
    page.click("#horizon-picker button[data-horizon='10']")
    page.wait_for_function("(document.getElementById('chart-forecast-gpu_temperature_celsius').data[2] || {x: []})"
                           ".x.length > 5", timeout=WAIT_MS)
    measured = page.evaluate("document.getElementById('chart-forecast-gpu_temperature_celsius').data[3].x.length")
    assert measured > 20
    cache = page.evaluate("document.getElementById('chart-cache').data.map(t => t.x[0])")
    assert cache[1] > 4 * cache[0] > 0  # MHA would need several times the MLA cache for the same streams
    assert not errors
    page.screenshot(path=str(SCREENSHOTS / "approver-models.png"), full_page=True)


def test_api_docs_render_offline_under_the_csp(login):
    """Swagger UI and ReDoc from the installed sidecar: they render the schema with no CDN and no inline script."""
    page = login("viewer")
    loaded = []  # requests that got an answer (the CSP stops any other origin before it is asked)
    page.on("requestfinished", lambda r: loaded.append(r.url))
    assert page.goto("/api/docs/").status == 200
    page.wait_for_selector(".swagger-ui .opblock", timeout=WAIT_MS)
    assert page.locator(".swagger-ui .opblock-tag", has_text="inference").count() >= 1
    assert page.goto("/api/redoc/").status == 200
    page.wait_for_selector("[data-section-id]", timeout=WAIT_MS)
    site = page.url.split("/api/")[0]
    assert loaded and all(u.startswith((site, "data:", "blob:")) for u in loaded), loaded
    page.screenshot(path=str(SCREENSHOTS / "viewer-api-docs.png"))


def test_loop_draws_predicted_vs_measured_effect_per_change(login):
    page = login("operator")
    assert page.goto("/loop/").status == 200
    _wait_live(page)
    page.wait_for_function("document.getElementById('chart-setpoints').dataset.draws > 0", timeout=WAIT_MS)
    assert page.locator("#effects-empty").is_visible()
    effect = {"window_s": 600, "predicted": {"cooling_kw": -3.0, "facility_kw": -2.4, "hottest_gpu_c": 0.6,
                                             "throughput_pct": 0.0},
              "measured": {"cooling_kw": -2.1, "facility_kw": -2.0, "hottest_gpu_c": 0.9, "throughput_pct": -0.1}}
    page.evaluate("""(effect) => FuseDC.loop.setAnnotations([{time: Date.now() / 1000 - 60, unit: 'crah-a1',
        setpoint: 'supply_air_temperature_setpoint_celsius', value: 18.5, state: 'applied', text: 'applied',
        change: 1, label: '#1 crah-a1 18→18.5', effect}])""", effect)
    for key in ("cooling_kw", "facility_kw", "hottest_gpu_c", "throughput_pct"):
        page.wait_for_selector(f"#chart-effect-{key} .main-svg", timeout=WAIT_MS)
    bars = page.evaluate("document.getElementById('chart-effect-cooling_kw').data.map(t => t.y[0])")
    assert bars == [-3.0, -2.1]
    assert not page.locator("#effects-empty").is_visible()
    page.locator("#effect-charts").screenshot(path=str(SCREENSHOTS / "operator-loop-effects.png"))


@pytest.fixture(scope="module")
def policy_proposal(live_site, django_db_blocker):
    """A pending change proposed by the MPC policy (run by the operator), committed for the server to see."""
    from django.contrib.auth.models import User

    from control import changes
    from facility.models import Setpoint

    with django_db_blocker.unblock():
        point = Setpoint.objects.get(cooling_unit__name="cdu-b1", name="secondary_supply_temperature_setpoint")
        operator = User.objects.get(username=live_site["users"]["operator"][0])
        return changes.propose(point, point.value - 0.5, user=operator, policy="mpc",
                               rationale="MPC: colder CDU supply keeps hall-b below its warn margin, 0.4 % more energy",
                               predicted_effect={"horizon_s": 600, "delta_cooling_kwh": 0.05,
                                                 "delta_end_max_gpu_temperature_c": -0.8})


def test_approver_approves_a_policy_proposal_in_the_browser_and_a_viewer_cannot(login, policy_proposal):
    card = f"#change-{policy_proposal.pk}"
    viewer = login("viewer")
    assert viewer.goto("/control/approvals/").status == 200
    viewer.wait_for_selector(card)
    assert viewer.locator(f"{card} [data-action=approve]").count() == 0  # no approve controls for a viewer
    status = viewer.evaluate("""(pk) => fetch("/control/approvals/", {method: 'POST', credentials: 'same-origin',
        headers: {'Content-Type': 'application/x-www-form-urlencoded',
                  'X-CSRFToken': document.cookie.match(/csrftoken=([^;]+)/)[1]},
        body: `change=${pk}&decision=approve`}).then(r => r.status)""", policy_proposal.pk)
    assert status == 403

    approver = login("approver")
    approver.goto("/control/approvals/")
    approver.wait_for_selector(card)
    assert "colder CDU supply" in approver.locator(f"{card} .rationale").inner_text()
    assert "delta_end_max_gpu_temperature_c" in approver.locator(f"{card} .effect").inner_text()
    approver.fill(f"{card} input[name=comment]", "ok: hall-b is warm")
    approver.screenshot(path=str(SCREENSHOTS / "approver-approvals.png"), full_page=True)
    approver.click(f"{card} [data-action=approve]")
    approver.wait_for_selector(".messages .success", timeout=WAIT_MS)
    assert "Approved" in approver.locator(".messages").inner_text()
    # The loop page's setpoint timeline shows the proposal and the approval.
    approver.goto("/loop/")
    approver.wait_for_function("Number(document.getElementById('chart-setpoints').dataset.annotations) >= 2",
                               timeout=WAIT_MS)

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
    for url in ("/live/", "/loop/", _detail_urls(live_site["site"])["gpu"]):
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

"""The web console in a real Chromium against the local stack: sign-in (development token, pasted token,
authorization code + PKCE), the form with its live preview, the triggers table, run now, cancel, rerun,
enable/disable, delete; no console errors, labelled controls, keyboard use, and 1280 px and 390 px widths.

Screenshots of each page are written to docs/console/ (the README shows them).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import secrets
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import jwt
import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, ViewportSize, expect, sync_playwright

from sundial_local.config import DEV_JWT_SECRET
from tests.e2e.stack_support import (
    NEVER,
    ROOT,
    Api,
    RecordingAgent,
    StackProcess,
    send_json,
    serve_in_background,
    wait_for,
)

# One stack serves every scenario here, so they run on one worker.
pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("console")]

PROJECT = "console"
BASE = f"/tenants/acme/projects/{PROJECT}/agents/reporter/scheduled-triggers"
SHOTS = ROOT / "docs" / "console"
WIDE: ViewportSize = {"width": 1280, "height": 900}
NARROW: ViewportSize = {"width": 390, "height": 844}
RUN_SECONDS = 60.0


def console_token(sub: str = "alice", roles: tuple[str, ...] = ("editor",), secret: str = DEV_JWT_SECRET) -> str:
    claims = {"sub": sub, "tenant_id": "acme", "roles": list(roles), "exp": int(time.time()) + 3600}
    return jwt.encode(claims, secret, algorithm="HS256")


def shown_time(iso: str) -> str:
    """An API timestamp as the console shows it."""
    return iso.replace("T", " ").removesuffix("Z") + " UTC"


def chromium() -> str:
    found = os.environ.get("SUNDIAL_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    message = "no Chromium: `make browser` installs Debian's chromium (as root), or set SUNDIAL_CHROMIUM"
    if os.environ.get("CI"):
        pytest.fail(f"{message}; CI must run the console tests")
    pytest.skip(message)


@dataclass
class IdentityProvider:
    """An OIDC provider for authorization code + PKCE: /authorize redirects back with a code, /token checks the
    verifier against the challenge and answers with a token the local stack accepts."""

    issued: list[dict[str, str]] = field(default_factory=list)
    pending: dict[str, dict[str, str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                query = {name: values[0] for name, values in parse_qs(urlsplit(self.path).query).items()}
                code = secrets.token_urlsafe(16)
                provider.pending[code] = query
                self.send_response(302)
                self.send_header(
                    "Location", f"{query['redirect_uri']}?{urlencode({'code': code, 'state': query['state']})}"
                )
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_POST(self) -> None:
                form = {
                    k: v[0] for k, v in parse_qs(self.rfile.read(int(self.headers["Content-Length"])).decode()).items()
                }
                asked = provider.pending.pop(form.get("code", ""), None)
                digest = hashlib.sha256(form.get("code_verifier", "").encode()).digest()
                challenge = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
                valid = (
                    asked is not None
                    and form.get("grant_type") == "authorization_code"
                    and asked["code_challenge_method"] == "S256"
                    and asked["code_challenge"] == challenge
                    and asked["redirect_uri"] == form.get("redirect_uri")
                    and asked["client_id"] == form.get("client_id") == "sundial-console"
                )
                if asked is not None and valid:
                    provider.issued.append({**asked, "verifier": form["code_verifier"]})
                    status, reply = 200, {"access_token": console_token("bob", ("viewer",)), "token_type": "Bearer"}
                else:
                    status, reply = 400, {"error": "invalid_grant"}
                send_json(self, status, reply, {"Access-Control-Allow-Origin": "*"})

            def log_message(self, *args: Any) -> None:
                pass

        self.server = serve_in_background(Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"


@pytest.fixture(scope="module")
def agent() -> Iterator[RecordingAgent]:
    recording = RecordingAgent()
    yield recording
    for hold in recording.held.values():
        hold.set()
    recording.server.shutdown()


@pytest.fixture(scope="module")
def idp() -> Iterator[IdentityProvider]:
    provider = IdentityProvider()
    yield provider
    provider.server.shutdown()


@pytest.fixture(scope="module")
def stack(
    agent: RecordingAgent, idp: IdentityProvider, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[StackProcess]:
    process = StackProcess(
        agent.url,
        tmp_path_factory.mktemp("console-stack"),
        secret=DEV_JWT_SECRET,
        CONSOLE_OIDC_AUTHORIZE_URL=f"{idp.url}/authorize",
        CONSOLE_OIDC_TOKEN_URL=f"{idp.url}/token",
        CONSOLE_OIDC_CLIENT_ID="sundial-console",
    )
    process.start()
    yield process
    assert process.stop() == 0, process.output


@pytest.fixture(scope="module")
def api(stack: StackProcess) -> Api:
    return Api(stack.url)


def editor_call(api: Api, method: str, path: str, body: Any = None, expect: int = 200) -> Any:
    return api.ok(method, path, body, expect=expect, auth=console_token())


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    executable = chromium()
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        yield launched
        launched.close()


@dataclass
class Console:
    """One browser page on the console, with every console error and uncaught exception it produced."""

    page: Page
    url: str
    errors: list[str] = field(default_factory=list)
    expected: list[str] = field(default_factory=list)

    def expect_error(self, pattern: str) -> None:
        """A message the scenario causes on purpose (the browser logs each refused request)."""
        self.expected.append(pattern)

    def unexpected(self) -> list[str]:
        return [error for error in self.errors if not any(re.search(pattern, error) for pattern in self.expected)]

    def open(self, route: str = "") -> None:
        self.page.goto(f"{self.url}/console{route}")

    def sign_in(self, route: str = "") -> None:
        """The development sign-in, landing on `route` (the page asked for before signing in)."""
        self.open(route)
        self.page.get_by_role("button", name="Sign in", exact=True).click()
        expect(self.page.locator("#who")).to_contain_text("alice")

    def shot(self, name: str) -> None:
        SHOTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=SHOTS / f"{name}.png", full_page=True)


@pytest.fixture
def console(browser: Browser, stack: StackProcess, request: pytest.FixtureRequest) -> Iterator[Console]:
    viewport: ViewportSize = getattr(request, "param", WIDE)
    context = browser.new_context(viewport=viewport)
    page = context.new_page()
    page.set_default_timeout(15_000)
    opened = Console(page, stack.url)
    page.on("console", lambda message: _record(opened, message))
    page.on("pageerror", lambda error: opened.errors.append(f"uncaught: {error}"))
    yield opened
    context.close()
    assert not opened.unexpected(), f"console errors: {opened.unexpected()}"


def _record(console: Console, message: ConsoleMessage) -> None:
    if message.type in ("error", "assert"):
        console.errors.append(message.text)


def trigger_route(trigger_id: str) -> str:
    return f"#/projects/{PROJECT}/agents/reporter/triggers/{trigger_id}"


def create(api: Api, trigger_id: str, **fields: Any) -> dict[str, Any]:
    body = {"id": trigger_id, "name": trigger_id.replace("-", " ").capitalize(), "cronExpression": NEVER, **fields}
    created: dict[str, Any] = editor_call(api, "POST", BASE, body, expect=201)
    return created


def invocations(api: Api, trigger_id: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = editor_call(api, "GET", f"{BASE}/{trigger_id}/invocations")["data"]
    return found


def test_a_new_user_signs_in_creates_a_trigger_in_the_form_and_finds_it_in_the_table(
    console: Console, api: Api
) -> None:
    page = console.page
    console.open()
    expect(page.get_by_role("heading", name="Sign in to Sundial")).to_be_visible()
    console.shot("sign-in")
    page.get_by_role("button", name="Sign in", exact=True).click()
    page.get_by_label("Project id").fill(PROJECT)
    page.get_by_role("button", name="Open project").click()
    expect(page.get_by_role("heading", name=f"Triggers of {PROJECT}")).to_be_visible()

    page.get_by_role("link", name="New trigger").click()
    page.get_by_label("Agent").fill("reporter")
    page.get_by_label("Name", exact=True).fill("Weekday report")
    page.get_by_label("Time zone").fill("Europe/Berlin")
    cron = page.get_by_label("Cron expression")
    cron.fill("61 9 * * MON-FRI")
    console.expect_error(r"status of 422")
    expect(page.locator("#f-cronExpression-error")).to_contain_text("minute")
    expect(cron).to_have_attribute("aria-invalid", "true")
    assert editor_call(api, "GET", BASE)["data"] == [], "nothing is created while the form is being typed"

    cron.fill("0 9 * * MON-FRI")
    preview = editor_call(
        api,
        "POST",
        "/schedule-preview",
        {"cronExpression": "0 9 * * MON-FRI", "cronTimezone": "Europe/Berlin", "count": 5},
    )
    expect(page.locator("#preview")).to_contain_text(preview["scheduleDescription"])
    expect(page.locator("#preview li").first).to_have_text(shown_time(preview["nextRuns"][0]))
    expect(page.locator("#f-cronExpression-error")).to_be_empty()
    page.get_by_label("Payload (JSON object)").fill('{"topic": "sales"}')
    page.get_by_label("Message template").fill("Write the {{topic}} report")
    console.shot("trigger-form")
    page.get_by_role("button", name="Create trigger").click()
    expect(page.get_by_role("heading", name="Weekday report")).to_be_visible()

    (created,) = editor_call(api, "GET", BASE)["data"]
    assert created["payload"] == {"topic": "sales"}
    assert created["cronTimezone"] == "Europe/Berlin"
    page.get_by_role("link", name=PROJECT).click()
    row = page.get_by_role("row").filter(has_text="Weekday report")
    expect(row).to_contain_text(created["scheduleDescription"])
    expect(row).to_contain_text(shown_time(created["nextRunAt"]))
    expect(row).to_contain_text("Europe/Berlin")
    expect(row).to_contain_text("main")
    console.shot("triggers")


def test_run_now_double_clicked_starts_one_run_which_completes_with_its_attempt(
    console: Console, api: Api, agent: RecordingAgent
) -> None:
    create(api, "double-click")
    page = console.page
    console.sign_in(trigger_route("double-click"))
    page.get_by_role("button", name="Run now").dblclick()
    (run,) = wait_for("the run to be recorded", lambda: invocations(api, "double-click"), RUN_SECONDS)
    page.get_by_role("link", name=run["id"]).click()
    expect(page.locator("[data-field=status]")).to_have_text("completed", timeout=RUN_SECONDS * 1000)
    (call,) = agent.runs("double-click")
    attempt = page.locator("#attempts tbody tr")
    expect(attempt).to_have_count(1)
    expect(attempt).to_contain_text("succeeded")
    expect(attempt).to_contain_text("200")
    expect(attempt).to_contain_text(f"c-{call.at}")
    assert [item["kind"] for item in invocations(api, "double-click")] == ["manual"], "one click, one run"
    console.shot("invocation")


def test_a_running_run_is_cancelled_then_rerun_from_its_page(console: Console, api: Api, agent: RecordingAgent) -> None:
    create(api, "long-run")
    agent.held["long-run"] = threading.Event()
    started = editor_call(api, "POST", f"{BASE}/long-run/run", expect=202)
    first = started["invocationId"]
    wait_for("the agent call", lambda: agent.runs("long-run"), RUN_SECONDS)
    page = console.page
    console.sign_in(f"{trigger_route('long-run')}/invocations/{first}")
    expect(page.locator("[data-field=status]")).to_have_text("running")
    page.get_by_role("button", name=f"Cancel {first}").click()
    expect(page.locator("[data-field=status]")).to_have_text("cancelled")
    agent.held["long-run"].set()

    page.get_by_role("button", name=f"Rerun {first}").click()
    expect(page.locator("#toast")).to_contain_text("Rerun started")
    rerun = wait_for(
        "the rerun", lambda: [i for i in invocations(api, "long-run") if i["kind"] == "rerun"], RUN_SECONDS
    )[0]
    assert rerun["rerunOf"] == first
    page.goto(f"{console.url}/console{trigger_route('long-run')}/invocations/{rerun['id']}")
    expect(page.locator("[data-field=rerunOf] a")).to_have_text(first)
    expect(page.locator("[data-field=status]")).to_have_text("completed", timeout=RUN_SECONDS * 1000)
    assert editor_call(api, "GET", f"{BASE}/long-run/invocations/{first}")["status"] == "cancelled"


def test_a_backfill_from_the_dialog_runs_each_past_occurrence_once(console: Console, api: Api) -> None:
    create(api, "catch-up", cronExpression="0 * * * *")
    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    start, end = hour - timedelta(hours=3, minutes=30), hour - timedelta(minutes=30)
    page = console.page
    console.sign_in(trigger_route("catch-up"))

    page.get_by_role("button", name="Backfill").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_label("Backfill from (UTC)").fill(start.strftime("%Y-%m-%dT%H:%M:%S"))
    dialog.get_by_label("Backfill to (UTC)").fill((hour + timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%S"))
    console.expect_error(r"status of 422")
    dialog.get_by_role("button", name="Backfill").click()
    expect(page.locator("#backfill-to-error")).to_have_text("must not be in the future")
    assert invocations(api, "catch-up") == [], "a refused range starts nothing"

    dialog.get_by_label("Backfill to (UTC)").fill(end.strftime("%Y-%m-%dT%H:%M:%S"))
    console.shot("backfill")
    dialog.get_by_role("button", name="Backfill").click()
    expect(page.locator("#toast")).to_have_text("Backfill: 3 started")
    expect(page.get_by_role("dialog")).to_be_hidden()
    rows = page.locator("#invocations tbody tr")
    expect(rows).to_have_count(3)
    expect(rows.filter(has_text="backfill")).to_have_count(3)
    done = wait_for(
        "the backfilled runs",
        lambda: [i for i in invocations(api, "catch-up") if i["status"] == "completed"][2:],
        RUN_SECONDS,
    )
    assert done
    ran = sorted(item["scheduledFor"] for item in invocations(api, "catch-up"))
    assert ran == [(hour - timedelta(hours=k)).strftime("%Y-%m-%dT%H:%M:%SZ") for k in (3, 2, 1)]

    page.get_by_role("button", name="Backfill").click()
    page.get_by_role("dialog").get_by_role("button", name="Backfill").click()
    expect(page.locator("#toast")).to_have_text("Backfill: 0 started, 3 started before")
    assert len(invocations(api, "catch-up")) == 3, "posting the range again starts nothing"


def test_disable_enable_and_delete_only_after_confirming(console: Console, api: Api) -> None:
    create(api, "short-lived")
    page = console.page
    console.sign_in(f"#/projects/{PROJECT}")
    toggle = page.get_by_label("Enabled: Short lived")
    toggle.uncheck()
    wait_for("the trigger to be disabled", lambda: not editor_call(api, "GET", f"{BASE}/short-lived")["enabled"], 15)
    expect(page.get_by_label("Enabled: Short lived")).not_to_be_checked()

    page.get_by_role("link", name="Short lived").click()
    page.get_by_role("button", name="Enable").click()
    expect(page.get_by_role("button", name="Disable")).to_be_visible()
    assert editor_call(api, "GET", f"{BASE}/short-lived")["enabled"] is True

    page.get_by_role("button", name="Delete").click()
    expect(page.get_by_role("dialog")).to_contain_text("Delete Short lived?")
    page.get_by_role("button", name="Keep it").click()
    assert editor_call(api, "GET", f"{BASE}/short-lived")["id"] == "short-lived"
    page.get_by_role("button", name="Delete").click()
    page.get_by_role("dialog").get_by_role("button", name="Delete").click()
    expect(page.get_by_role("heading", name=f"Triggers of {PROJECT}")).to_be_visible()
    editor_call(api, "GET", f"{BASE}/short-lived", expect=404)
    expect(page.get_by_role("link", name="Short lived")).to_have_count(0)


def test_a_pasted_viewer_token_is_refused_writes_and_a_refused_token_signs_out(console: Console, api: Api) -> None:
    create(api, "read-only")
    page = console.page
    console.open(trigger_route("read-only"))
    page.get_by_label("Bearer token (JWT)").fill(console_token("vera", ("viewer",)))
    page.get_by_role("button", name="Use this token").click()
    expect(page.get_by_role("heading", name="Read only")).to_be_visible()
    console.expect_error(r"status of 403")
    page.get_by_role("button", name="Run now").click()
    expect(page.locator("#toast")).to_contain_text("Not allowed:")
    assert invocations(api, "read-only") == []

    page.get_by_role("button", name="Sign out").click()
    page.get_by_label("Bearer token (JWT)").fill(console_token(secret="not-the-stacks-secret-at-all-really"))
    console.expect_error(r"status of 401")
    page.get_by_role("button", name="Use this token").click()
    expect(page.get_by_role("alert")).to_contain_text("The API refused the token")
    expect(page.get_by_role("heading", name="Sign in to Sundial")).to_be_visible()


def test_single_sign_on_uses_authorization_code_with_pkce(console: Console, idp: IdentityProvider) -> None:
    page = console.page
    console.open()
    page.get_by_role("button", name="Sign in with your identity provider").click()
    expect(page.locator("#who")).to_contain_text("bob")
    expect(page.locator("#who")).to_contain_text("viewer")
    (issued,) = idp.issued
    assert issued["code_challenge_method"] == "S256"
    assert issued["redirect_uri"] == f"{console.url}/console"
    assert len(issued["verifier"]) >= 43
    assert "?code=" not in page.url, "the code does not stay in the address bar"


@pytest.mark.parametrize("console", [NARROW], indirect=True)
def test_every_page_fits_390_px_labels_every_control_and_works_by_keyboard(console: Console, api: Api) -> None:
    create(api, "keyboard")
    page = console.page
    console.open()
    routes = {
        "sign-in": "",
        "projects": "#/",
        "triggers": f"#/projects/{PROJECT}",
        "trigger": trigger_route("keyboard"),
        "edit": f"{trigger_route('keyboard')}/edit",
        "history": f"#/projects/{PROJECT}/invocations",
    }
    for name, route in routes.items():
        if name == "projects":
            page.get_by_role("button", name="Sign in", exact=True).click()
        page.goto(f"{console.url}/console{route}")
        expect(page.locator("main h1")).to_be_visible()
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"{name}: the page is {overflow}px wider than the screen"
        unnamed = page.evaluate(
            """[...document.querySelectorAll('input, select, textarea, button, a[href]')]
                .filter((el) => el.offsetParent !== null)
                .filter((el) => !(el.labels && el.labels.length))
                .filter((el) => !el.getAttribute('aria-label') && !el.textContent.trim())
                .map((el) => el.outerHTML.slice(0, 80))"""
        )
        assert unnamed == [], f"{name}: controls without a name: {unnamed}"
        if name in ("triggers", "trigger"):
            expect(page.get_by_text("Loading")).to_have_count(0)
            console.shot(f"{name}-390")

    page.goto(f"{console.url}/console{trigger_route('keyboard')}")
    expect(page.get_by_role("button", name="Run now")).to_be_visible()
    for _ in range(40):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement && document.activeElement.id") == "run-now":
            break
    else:
        pytest.fail("Run now cannot be reached with the Tab key")
    page.keyboard.press("Enter")
    wait_for("the run started by keyboard", lambda: invocations(api, "keyboard"), RUN_SECONDS)


def test_the_api_docs_page_renders_swagger_ui_with_nothing_from_the_internet(console: Console) -> None:
    page = console.page
    elsewhere: list[str] = []

    def only_local(route: Any) -> None:
        if urlsplit(route.request.url).hostname in ("127.0.0.1", "localhost") or route.request.url.startswith("data:"):
            route.continue_()
        else:
            elsewhere.append(route.request.url)
            route.abort()

    page.route("**/*", only_local)
    page.goto(f"{console.url}/docs")
    expect(page.locator(".opblock-summary-description", has_text="Run a trigger now")).to_be_visible()
    expect(page.locator(".information-container")).to_contain_text("Sundial")
    assert elsewhere == []
    console.shot("api-docs")


def test_the_console_shows_every_page_without_errors_at_full_width(console: Console, api: Api) -> None:
    """The pages the other scenarios do not capture: project history, the edit form and an empty project."""
    create(api, "history-source", cronTimezone="Europe/Berlin", cronExpression="30 8 * * *")
    run = editor_call(api, "POST", f"{BASE}/history-source/run", expect=202)
    wait_for(
        "the run to finish",
        lambda: (
            editor_call(api, "GET", f"{BASE}/history-source/invocations/{run['invocationId']}")["status"] == "completed"
        ),
        RUN_SECONDS,
    )
    page = console.page
    console.sign_in(f"#/projects/{PROJECT}/invocations")
    expect(page.get_by_role("link", name=run["invocationId"])).to_be_visible()
    console.shot("project-history")
    page.goto(f"{console.url}/console{trigger_route('history-source')}/edit")
    expect(page.get_by_label("Cron expression")).to_have_value("30 8 * * *")
    expect(page.locator("#preview")).to_contain_text("08:30")
    page.get_by_label("Name", exact=True).fill("History source, renamed")
    page.get_by_role("button", name="Save changes").click()
    expect(page.get_by_role("heading", name="History source, renamed")).to_be_visible()
    updated = editor_call(api, "GET", f"{BASE}/history-source")
    assert updated["name"] == "History source, renamed"
    assert updated["cronExpression"] == "30 8 * * *", "an edit sends only what changed"
    page.goto(f"{console.url}/console#/projects/nothing-here")
    expect(page.get_by_text("No triggers here yet.")).to_be_visible()


def test_the_table_pages_filters_by_agent_and_searches_by_name(console: Console, api: Api) -> None:
    project = "paging"
    for number in range(21):
        agent = "other" if number == 20 else "reporter"
        body = {"id": f"t{number:02d}", "name": f"Report {number:02d}", "cronExpression": NEVER}
        editor_call(api, "POST", f"/tenants/acme/projects/{project}/agents/{agent}/scheduled-triggers", body, 201)
    page = console.page
    console.sign_in(f"#/projects/{project}")
    rows = page.locator("tbody tr")
    expect(rows).to_have_count(20)
    page.get_by_role("button", name="Next page").click()
    expect(rows).to_have_count(1)
    page.get_by_role("button", name="Previous page").click()
    expect(rows).to_have_count(20)

    page.get_by_label("Agent").fill("other")
    page.get_by_role("button", name="Filter").click()
    expect(rows).to_have_count(1)
    expect(rows).to_contain_text("Report 20")
    page.get_by_label("Agent").fill("")
    page.get_by_label("Search by name").fill("report 1")
    page.get_by_role("button", name="Filter").click()
    expect(rows).to_have_count(10)
    expect(page.get_by_role("button", name="Next page")).to_be_disabled()


def test_a_deployed_console_links_an_invocation_to_its_execution_and_filters_by_status_and_time(
    console: Console, api: Api
) -> None:
    create(api, "linked")
    run = editor_call(api, "POST", f"{BASE}/linked/run", expect=202)
    path = f"{BASE}/linked/invocations/{run['invocationId']}"
    wait_for("the run to finish", lambda: editor_call(api, "GET", path)["status"] == "completed", RUN_SECONDS)
    page = console.page

    def as_deployed(route: Any) -> None:
        config = json.loads(route.fetch().text())
        route.fulfill(json={**config, "executionLinks": True})

    page.route("**/console/config.json", as_deployed)
    console.sign_in(trigger_route("linked"))
    page.get_by_label("Status").select_option("failed")
    page.get_by_role("button", name="Apply").click()
    expect(page.get_by_text("No invocations match.")).to_be_visible()
    page.get_by_label("Status").select_option("completed")
    page.get_by_label("From (UTC)", exact=True).fill("2099-01-01T00:00")
    page.get_by_role("button", name="Apply").click()
    expect(page.get_by_text("No invocations match.")).to_be_visible()
    page.get_by_label("From (UTC)", exact=True).fill("2026-01-01T00:00")
    page.get_by_label("To (UTC)", exact=True).fill("2099-01-01T00:00")
    page.get_by_role("button", name="Apply").click()
    page.get_by_role("link", name=run["invocationId"]).click()
    link = page.get_by_role("link", name="Open in Step Functions")
    arn = run["executionArn"]
    expect(link).to_have_attribute(
        "href", f"https://us-east-1.console.aws.amazon.com/states/home?region=us-east-1#/v2/executions/details/{arn}"
    )

"""The dashboard in Debian's chromium: the cases with their deciding sources, the next case, jobs, sign-in."""

from __future__ import annotations

import re

import pytest

from segloop.store import JobStatus

pytestmark = pytest.mark.browser

SHAPE = (16, 16, 8)


def open_dashboard(page, server) -> dict:
    """Open ``/`` and wait until the dashboard loaded its project, cases, rounds and jobs."""
    page.goto(f"{server.url}/")
    page.wait_for_function("() => window.__dashboard && window.__dashboard.ready")
    return page.evaluate("() => ({...window.__dashboard})")


def case_rows(page) -> dict[str, list[str]]:
    """The shown rows: case id -> the source letter of each class, in the project's class order."""
    return page.evaluate(
        """() => Object.fromEntries([...document.querySelectorAll('#cases-body tr:not([hidden])')].map(
            (tr) => [tr.dataset.case, [...tr.querySelectorAll('.source')].map((s) => s.textContent)]))"""
    )


def test_dashboard_lists_the_cases_with_the_source_deciding_each_class(serve, page) -> None:
    server = serve(count=3, shape=SHAPE, labeled=(0,), source="sparse")
    status = open_dashboard(page, server)
    assert status["cases"] == 3
    names = [c.name for c in server.project.config.schema.classes]
    headings = page.locator("#cases-head th.class-col").all_inner_texts()
    assert [h.strip() for h in headings] == names
    rows = case_rows(page)
    assert rows == {"c0": ["S"] * len(names), "c1": ["–"] * len(names), "c2": ["–"] * len(names)}
    assert page.locator("#project-name").inner_text() == server.project.config.name
    page.fill("#filter", "c2")
    assert list(case_rows(page)) == ["c2"]
    assert page.locator("#case-count").inner_text() == "(1 of 3)"
    href = page.locator('#cases-body tr[data-case="c2"] a').get_attribute("href")
    assert href == "/edit/c2"


def test_next_case_opens_the_editor_of_the_case_the_server_chose(serve, page) -> None:
    server = serve(count=2, shape=SHAPE, labeled=(0,))
    open_dashboard(page, server)
    with page.expect_navigation(url=re.compile(r"/edit/c[01]$")) as navigation:
        page.click("#next-case")
    assert navigation.value.status == 200


def test_jobs_panel_shows_past_jobs_and_offers_to_resume_an_interrupted_one(serve, page) -> None:
    server = serve(count=1, shape=SHAPE, labeled=(0,))
    project = server.project
    done = project.start_job("predict", author="ann", params={"unlabeled": True})
    project.finish_job(done.id, result={"cases": []})
    stopped = project.start_job("train", author="bob", params={"epochs": 1})
    project.finish_job(stopped.id, status=JobStatus.INTERRUPTED, error="the server stopped")
    open_dashboard(page, server)
    entry = page.locator(f'#jobs .job[data-job="{stopped.id}"]')
    assert "interrupted" in entry.locator(".status").inner_text()
    assert "the server stopped" in entry.inner_text()
    assert entry.get_by_role("button", name="Resume").is_visible()
    finished = page.locator(f'#jobs .job[data-job="{done.id}"]')
    assert finished.locator(".status").inner_text() == "done"
    assert finished.get_by_role("button").count() == 0


def test_a_bad_job_request_shows_the_servers_reason_on_the_message_line(serve, page, console) -> None:
    console.allow("status of 422")
    server = serve(count=1, shape=SHAPE, labeled=(0,))
    open_dashboard(page, server)
    page.select_option("#job-kind", "train")
    page.fill("#job-epochs", "0")  # epochs must be >= 1: refused before anything starts
    page.click("#job-start")
    message = page.locator("#message.error")
    message.wait_for()
    assert "Starting a train job" in message.inner_text()
    assert "epochs" in message.inner_text()
    assert page.locator("#jobs .job").count() == 0


def test_the_dashboard_asks_for_a_token_when_the_server_requires_sign_in(serve, page, console) -> None:
    from segloop.loop.users import create_user

    console.allow("status of 401")
    server = serve(count=1, shape=SHAPE, labeled=(0,), require_sign_in=True)
    _, token = create_user(server.project, "ann")
    page.goto(f"{server.url}/")
    dialog = page.locator("dialog.sign-in")
    dialog.wait_for()
    dialog.locator("input[name=token]").fill(token)
    dialog.get_by_role("button", name="Sign in").click()
    page.wait_for_function("() => window.__dashboard && window.__dashboard.ready")
    assert page.locator("#author").inner_text() == "signed in as ann"
    assert list(case_rows(page)) == ["c0"]
    assert page.evaluate("() => localStorage.getItem('segloop.token')") == token


@pytest.mark.slow  # a job process: imports torch, trains one epoch, predicts (about 10 s)
def test_a_round_started_from_the_dashboard_runs_live_and_fills_rounds_and_report(serve, page) -> None:
    server = serve(count=4, shape=(24, 24, 16), labeled=(0, 1, 2), source="original")
    open_dashboard(page, server)
    page.fill("#job-epochs", "1")
    page.fill("#job-minutes", "0.2")
    page.click("#job-start")  # the form's default kind is a round
    job = page.locator("#jobs .job").first
    job.get_by_role("button", name="Cancel").wait_for()  # running, offered to cancel
    page.locator("#message.ok").wait_for(timeout=180_000)
    assert job.locator(".status").inner_text() == "done"
    assert "finished" in page.locator("#message").inner_text()
    assert page.locator("#rounds-body tr").count() == 1
    assert page.locator("#rounds-body td").nth(1).inner_text() == "done"
    page.locator("#plots img").first.wait_for()
    page.wait_for_function("() => document.querySelector('#plots img').naturalWidth > 0")
    names = page.eval_on_selector_all("#plots img", "(images) => images.map((i) => i.dataset.plot)")
    assert "dice_per_round.png" in names
    rows = case_rows(page)
    assert rows["c3"] == ["P"] * 4  # the round predicted the unlabelled case

"""The dashboard of a project with more cases than one page: the server pages, sorts and filters."""

from __future__ import annotations

import pytest

from tests.e2e.test_dashboard import case_rows, open_dashboard
from tests.store.many_cases import make_many_cases_project

pytestmark = pytest.mark.browser


def shown(page) -> list[str]:
    return list(case_rows(page))


def wait_for_count(page, text: str) -> None:
    page.wait_for_function("(text) => document.querySelector('#case-count').textContent === text", arg=text)


def test_a_large_project_is_paged_sorted_and_filtered_by_the_server(serve, page, tmp_path) -> None:
    server = serve(make_many_cases_project(tmp_path / "big", 450, max_versions=1))
    status = open_dashboard(page, server)
    assert status["cases"] == 200 and page.locator("#case-count").inner_text() == "(1–200 of 450)"
    assert shown(page)[:2] == ["case0000", "case0001"] and page.locator("#page-prev").is_disabled()
    page.click("#page-next")
    wait_for_count(page, "(201–400 of 450)")
    assert shown(page)[0] == "case0200"
    page.click("#page-next")
    wait_for_count(page, "(401–450 of 450)")
    assert page.locator("#page-next").is_disabled()
    page.locator("#cases-head th[data-key=id]").click()  # ascending: back to the first page
    wait_for_count(page, "(1–200 of 450)")
    page.locator("#cases-head th[data-key=id]").click()  # descending
    page.wait_for_function("() => document.querySelector('#cases-body tr').dataset.case === 'case0449'")
    page.fill("#filter", "case044")
    wait_for_count(page, "(1–10 of 10)")
    assert shown(page) == [f"case044{i}" for i in range(9, -1, -1)]

"""End-to-end tests: the editor in a real browser (Debian chromium via Playwright)."""

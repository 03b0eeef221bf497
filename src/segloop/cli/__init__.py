"""The `segloop` command line (typer + rich): thin adapters over `segloop.loop`."""

"""Fixtures for the bot's tests.

The PostgreSQL ones: ``CHARBOT_TEST_POSTGRES=postgresql://…`` names a server to use; otherwise one
is started for the session from the PostgreSQL binaries on this machine (Debian's ``postgresql``
package, which ``.ci/run`` installs) in a temporary folder, trusted on 127.0.0.1 only, and stopped
afterwards. Without binaries the PostgreSQL cases are skipped, except in CI (``CI=true``), where
that fails.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.helpers import free_port


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator:
    """The real bot, with tiny random models and a fresh database, connected to a fake Discord (e2e tests)."""
    from tests.bot.e2e_bot import bot_on_fake

    async with bot_on_fake(tmp_path) as running:
        yield running


def _binaries() -> Path | None:
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(versions[-1]).parent if versions else None


def _as_server_user(args: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: run it as the package's ``postgres`` user then."""
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *args]
    return args


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """The URL of a PostgreSQL server's maintenance database (``postgres``) for this test session."""
    given = os.environ.get("CHARBOT_TEST_POSTGRES")
    if given:
        yield given
        return
    bindir = _binaries()
    if bindir is None:
        if os.environ.get("CI"):
            pytest.fail("CI must test the store on PostgreSQL: install the postgresql package (.ci/run does)")
        pytest.skip("no PostgreSQL binaries here (apt-get install postgresql), or set CHARBOT_TEST_POSTGRES")
    # Not under pytest's temporary folder: its parents are private to root, and the server runs as postgres.
    root = Path(tempfile.mkdtemp(prefix="charbot-postgres-"))
    data = root / "data"
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
    port = free_port()
    run = {"check": True, "capture_output": True, "timeout": 120}
    subprocess.run(_as_server_user([str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "charbot",
                                    "--no-sync", "-E", "UTF8", "--locale=C"]), **run)
    options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off"
    subprocess.run(_as_server_user([str(bindir / "pg_ctl"), "-D", str(data), "-o", options, "-l",
                                    str(root / "server.log"), "-w", "start"]), **run)
    try:
        yield f"postgresql://charbot@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(_as_server_user([str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]),
                       capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
async def postgres_url(postgres_server: str, request: pytest.FixtureRequest) -> AsyncIterator[str]:
    """A fresh, empty database on the session's server, dropped after the test."""
    import asyncpg

    name = "t_" + "".join(c if c.isalnum() else "_" for c in request.node.name.lower())[:50]
    admin = await asyncpg.connect(postgres_server)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    yield postgres_server.rsplit("/", 1)[0] + "/" + name
    admin = await asyncpg.connect(postgres_server)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where a store lives: a SQLite file, or a PostgreSQL database (the same tests run on both)."""
    if request.param == "sqlite":
        return str(tmp_path / "bot.db")
    return request.getfixturevalue("postgres_url")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test on a real PostgreSQL server starts one: it is slow (``make test-fast`` skips it)."""
    for item in items:
        callspec = getattr(item, "callspec", None)
        on_postgres = callspec is not None and callspec.params.get("database") == "postgresql"
        if on_postgres or "postgres_url" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)

"""Fetching from a local HTTP server: right bytes kept, wrong bytes refused and deleted, clear errors."""

from __future__ import annotations

import dataclasses
import http.server
import json
import socket
import threading
from pathlib import Path

import pytest

from bot.cli import main
from corpora import registry
from corpora.clean import clean_gutenberg
from corpora.fetch import FetchError, fetch
from corpora.registry import ContentCheck, Download, load_corpus
from tests.helpers import register_mini


@pytest.fixture
def server(tmp_path):
    """An HTTP server on 127.0.0.1 serving files from a folder of its own; yields (folder, base URL)."""
    root = tmp_path / "served"
    root.mkdir()

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(root), **kwargs)

        def log_message(self, *args) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_good_checksum_is_fetched_into_the_data_folder(monkeypatch, tmp_path, server):
    root, base = server
    mini = register_mini(monkeypatch, tmp_path, write=False)
    (root / "mini.txt").write_bytes(mini.raw)
    result = fetch("mini", url=f"{base}/mini.txt")
    assert result.downloaded and result.path == mini.path and result.matched == "mirror"
    assert mini.path.read_bytes() == mini.raw
    assert leftovers(mini.data_dir) == ["mini.txt"]
    assert load_corpus("mini").source_sha256 == mini.corpus.sha256


def test_wrong_checksum_is_refused_and_nothing_is_left_behind(monkeypatch, tmp_path, server):
    root, base = server
    mini = register_mini(monkeypatch, tmp_path, write=False)
    (root / "mini.txt").write_bytes(mini.raw.replace(b"fox", b"cat"))
    with pytest.raises(FetchError, match="not a known edition of 'mini'.*deleted"):
        fetch("mini", url=f"{base}/mini.txt")
    assert leftovers(mini.data_dir) == []


def test_a_bad_download_never_replaces_a_good_copy(monkeypatch, tmp_path, server):
    root, base = server
    mini = register_mini(monkeypatch, tmp_path)
    (root / "mini.txt").write_bytes(b"<html>Rate limited</html>")
    with pytest.raises(FetchError):
        fetch("mini", url=f"{base}/mini.txt", force=True)
    assert mini.path.read_bytes() == mini.raw
    assert leftovers(mini.data_dir) == ["mini.txt"]


def test_a_verified_copy_is_not_downloaded_again_without_force(monkeypatch, tmp_path, server):
    _, base = server
    mini = register_mini(monkeypatch, tmp_path)
    result = fetch("mini", url=f"{base}/nothing-here.txt")
    assert not result.downloaded and result.path == mini.path


def test_an_unverified_file_in_the_way_needs_force(monkeypatch, tmp_path, server):
    root, base = server
    mini = register_mini(monkeypatch, tmp_path)
    mini.path.write_text("damaged\n")
    (root / "mini.txt").write_bytes(mini.raw)
    with pytest.raises(FetchError, match="--force"):
        fetch("mini", url=f"{base}/mini.txt")
    assert fetch("mini", url=f"{base}/mini.txt", force=True).downloaded
    assert mini.path.read_bytes() == mini.raw


def test_http_error_and_server_down_give_clear_errors(monkeypatch, tmp_path, server):
    _, base = server
    mini = register_mini(monkeypatch, tmp_path, write=False)
    with pytest.raises(FetchError, match="404"):
        fetch("mini", url=f"{base}/missing.txt")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(FetchError, match=f"could not download http://127.0.0.1:{port}/mini.txt"):
        fetch("mini", url=f"http://127.0.0.1:{port}/mini.txt", timeout=5)
    assert leftovers(mini.data_dir) == []


def test_a_source_without_a_pinned_checksum_is_checked_by_content(monkeypatch, tmp_path, server):
    root, base = server
    mini = register_mini(monkeypatch, tmp_path, write=False)
    book = mini.raw.decode()
    cleaned = book.replace("\r\n", "\n")
    check = ContentCheck(markers=("START OF",), phrases=(book.split(".")[0],), min_chars=len(cleaned) - 10,
                         max_chars=len(cleaned) + 10)
    edition = Download("gutenberg", f"{base}/pg.txt", check=check)
    corpus = dataclasses.replace(mini.corpus, downloads=(*mini.corpus.downloads, edition), clean=clean_gutenberg)
    monkeypatch.setitem(registry.CORPORA, "mini", corpus)
    (root / "pg.txt").write_text("Header\n*** START OF THE PROJECT GUTENBERG EBOOK MINI ***\n" + book
                                 + "*** END OF THE PROJECT GUTENBERG EBOOK MINI ***\nLicence\n")
    result = fetch("mini", source="gutenberg")
    assert result.matched == "gutenberg"
    assert load_corpus("mini").text == cleaned
    (root / "pg.txt").write_text("<html>Gutenberg is down</html>")
    with pytest.raises(FetchError):
        fetch("mini", source="gutenberg", force=True)


def test_unknown_source_is_named(monkeypatch, tmp_path):
    register_mini(monkeypatch, tmp_path, write=False)
    with pytest.raises(FetchError, match="no source 'web'.*mirror"):
        fetch("mini", source="web")


def test_fetch_command_prints_one_line_either_way(monkeypatch, tmp_path, server, capsys):
    root, base = server
    mini = register_mini(monkeypatch, tmp_path, write=False)
    (root / "bad.txt").write_bytes(b"wrong")
    assert main(["corpora", "fetch", "mini", "--url", f"{base}/bad.txt"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a known edition" in err
    (root / "mini.txt").write_bytes(mini.raw)
    assert main(["corpora", "fetch", "mini", "--url", f"{base}/mini.txt", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["downloaded"] and out["sha256"] == mini.corpus.sha256 and out["path"] == str(mini.path)
    assert main(["corpora", "fetch", "poems"]) == 2
    assert "unknown corpus 'poems'" in capsys.readouterr().err

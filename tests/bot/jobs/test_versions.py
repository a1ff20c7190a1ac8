"""Numbered version files: written whole or not at all, never overwritten, pruned by policy."""

from __future__ import annotations

import pytest

from bot.jobs.versions import VersionDir, versions_to_prune


def test_install_numbers_and_lists_versions(tmp_path):
    vdir = VersionDir.of(tmp_path, "tale")
    src = tmp_path / "new.bin"
    src.write_bytes(b"weights" * 1000)
    path = vdir.install(src, 3)
    assert path == tmp_path / "versions" / "tale" / "v0003.safetensors"
    assert path.read_bytes() == src.read_bytes() and src.exists()
    vdir.install(src, 1)
    assert vdir.on_disk() == [1, 3]
    with pytest.raises(FileExistsError):
        vdir.install(src, 3)
    vdir.remove(1)
    assert vdir.on_disk() == [3]


def test_a_failed_copy_leaves_no_version_and_temporaries_are_cleared(tmp_path):
    vdir = VersionDir.of(tmp_path, "tale")
    with pytest.raises(FileNotFoundError):
        vdir.install(tmp_path / "missing.bin", 1)
    assert vdir.on_disk() == [] and list(vdir.root.iterdir()) == []
    (vdir.root / ".v0002.safetensors.abc.tmp").write_bytes(b"half")  # what a kill mid-copy leaves
    assert vdir.remove_temporaries() == 1 and list(vdir.root.iterdir()) == []


def test_bad_corpus_names_never_become_paths(tmp_path):
    with pytest.raises(ValueError):
        VersionDir.of(tmp_path, "../etc")


def test_prune_keeps_the_newest_and_the_served_one():
    assert versions_to_prune([1, 2, 3, 4, 5], keep=2, protected={1}) == [2, 3]
    assert versions_to_prune([1, 2], keep=5, protected=set()) == []
    with pytest.raises(ValueError):
        versions_to_prune([1], keep=0, protected=set())

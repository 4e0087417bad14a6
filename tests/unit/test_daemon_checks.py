from pathlib import Path

from faasd.daemon import first_closed_ancestor


def test_the_first_directory_others_cannot_search_is_found(tmp_path: Path) -> None:
    for directory in (tmp_path.parent.parent, tmp_path.parent, tmp_path):  # pytest makes them 0700
        directory.chmod(directory.stat().st_mode | 0o001)
    closed = tmp_path / "closed"
    (closed / "state").mkdir(parents=True)
    closed.chmod(0o700)
    assert first_closed_ancestor(closed / "state" / "images") == closed
    closed.chmod(0o711)
    assert first_closed_ancestor(closed / "state" / "images") is None
    assert first_closed_ancestor(tmp_path / "not-yet" / "state") is None, "faasd creates those itself, searchable"

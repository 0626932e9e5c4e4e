"""`keypool clients create|list|revoke` against a real SQLite database."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.cli import main


def test_create_prints_the_key_once_list_shows_only_its_prefix_and_revoke_marks_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}")

    assert main(["clients", "create", "alice", "--name", "laptop", "--rpm", "3"]) == 0
    created = capsys.readouterr().out
    key = created.split("store it now): ")[1].strip()
    assert key.startswith("kp-")

    assert main(["clients", "list"]) == 0
    listed = capsys.readouterr().out
    assert key[:8] in listed
    assert key not in listed
    assert "active" in listed

    assert main(["clients", "revoke", "1"]) == 0
    assert "revoked" in capsys.readouterr().out
    assert main(["clients", "revoke", "7"]) == 1
    assert main(["clients", "create", "bob", "--tier", "gold"]) == 2

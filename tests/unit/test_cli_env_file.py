"""`keypool serve` takes HOST, PORT and WEB_CONCURRENCY from `.env` as well as the environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.cli import build_parser, main


@pytest.fixture
def in_dir_with_env_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for var in ("HOST", "PORT", "WEB_CONCURRENCY"):
        monkeypatch.delenv(var, raising=False)
    (tmp_path / ".env").write_text("HOST=0.0.0.0\nPORT=9123\nWEB_CONCURRENCY=3\n")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_serve_reads_host_port_and_workers_from_the_env_file(in_dir_with_env_file: Path) -> None:
    args = build_parser().parse_args(["serve"])
    assert (args.host, args.port, args.workers) == ("0.0.0.0", 9123, 3)


def test_the_real_environment_wins(
    in_dir_with_env_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PORT", "9200")
    assert build_parser().parse_args(["serve"]).port == 9200


def test_a_bad_port_is_one_clear_line(
    in_dir_with_env_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (in_dir_with_env_file / ".env").write_text("PORT=eighty\n")
    assert main(["keys"]) == 2
    assert "PORT" in capsys.readouterr().err

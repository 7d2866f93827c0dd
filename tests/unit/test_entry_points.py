"""Every service's entry point loads its settings through the shared loader: a bad value ends it with status 2 and
one line naming the variable, never echoing the value (it may be a secret) and never a traceback."""

import importlib
from pathlib import Path

import pytest

SECRET_LOOKING = "-1s3cret"


def _main(service: str):
    main = importlib.import_module(f"services.{service}.__main__").main
    if service in ("auth", "catalog", "modelserver"):
        return lambda: main([])
    return main


@pytest.mark.parametrize("service", ["auth", "catalog", "gateway", "inference", "modelserver"])
def test_a_bad_setting_stops_the_service_with_a_report(service, monkeypatch, capsys):
    monkeypatch.setenv("TAGSMITH_GRACE_SECONDS", SECRET_LOOKING)
    assert _main(service)() == 2
    report = capsys.readouterr().err
    assert report.startswith("invalid settings:\n")
    assert "TAGSMITH_GRACE_SECONDS: Input should be a valid number" in report
    assert "s3cret" not in report and "Traceback" not in report


def test_the_model_servers_flags_are_checked_by_the_same_loader(capsys):
    from services.modelserver.__main__ import main

    assert main(["--max_batch_size=0"]) == 2
    report = capsys.readouterr().err
    assert report == "invalid settings:\n  --max_batch_size: Input should be greater than or equal to 1\n"


def test_an_unreadable_batching_file_is_one_line(tmp_path: Path, capsys):
    from services.modelserver.__main__ import main

    missing = tmp_path / "batching.config"
    assert main([f"--batching_parameters_file={missing}"]) == 2
    assert capsys.readouterr().err == f"modelserver: batching parameters file {missing}: No such file or directory\n"

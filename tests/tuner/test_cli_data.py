"""The CLI turns a data source that is not there into one line on stderr and exit status 2."""

from __future__ import annotations

from trainables.tasks.loaders.errors import DataUnavailable
from tuner import cli

MESSAGE = ("data.source=hub: cannot reach the Hugging Face hub for google/xtreme PAN-X.en (ConnectionError); "
           "use data.source=local:<dir> (XTREME download layout) or data.source=synthetic")


def test_data_unavailable_is_one_line(monkeypatch, capsys):
    def unavailable(args):
        raise DataUnavailable(MESSAGE)

    monkeypatch.setattr(cli, "_cmd_sweep", unavailable)
    assert cli.main(["sweep", "smoke", "--set", "data.source=hub"]) == 2
    err = capsys.readouterr().err
    assert err == f"error: {MESSAGE}\n"

"""The trained model must rank better than simple baselines on a data set large enough to learn
from: 1,500 customers (seed 7), the default time split and training options, through the CLI."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from tastyrec.cli import app


def test_the_dlrm_beats_popularity_and_city_popularity_on_the_test_window(tmp_path) -> None:
    result = CliRunner().invoke(app, ["--home", str(tmp_path), "pipeline", "--customers", "1500", "--seed", "7",
                                      "--seed-samples", "0", "--json"])
    assert result.exit_code == 0, result.output
    evaluation = json.loads(result.stdout.strip().splitlines()[-1])["evaluation"]
    model = evaluation["model"]["ndcg@10"]
    for baseline in ("popularity", "city_popularity"):
        assert model > evaluation["baselines"][baseline]["ndcg@10"], (baseline, evaluation)
    assert model > evaluation["baselines"]["als"]["ndcg@10"]  # and the learned baseline, by a margin here
    assert evaluation["customers"] == 1500

"""The score-diffusion CPU table runs end to end at toy sizes and writes its JSON and Markdown table."""

import json

from test_pipeline import script


def test_the_cpu_table_trains_scores_and_tabulates_every_network_and_prior(tmp_path):
    out = tmp_path / "table"
    args = ["--size", "16", "--steps", "2", "--samples", "4", "--sampling_steps", "2", "--out", str(out)]
    script("experiments/sbdm_cpu_table.py").main(args + ["--runs", str(tmp_path / "runs")])
    table = json.loads((out / "table.json").read_text())
    assert [(r["network"], r["prior"]) for r in table["rows"]] == [
        ("fno", "standard"),
        ("fno", "laplacian"),
        ("cno", "standard"),
        ("cno", "laplacian"),
    ]
    for row in table["rows"]:
        assert set(row["riesz_mmd"]) == {"16", "32"} and row["route"] == "native" and row["steps"] == 2
        assert (out / f"sbdm_cpu_{row['network']}_{row['prior']}" / "samples_32.png").is_file()
    assert (out / "table.md").read_text().count("| fno |") == 2

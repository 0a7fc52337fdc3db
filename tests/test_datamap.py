"""`soicurate datamap` draws a PNG of a profile, with the profile's own thresholds."""

import struct

import pytest
from click.testing import CliRunner

from soicurate.cli import main
from soicurate.recording.synthetic import generate_run
from soicurate.reporting.datamap import profile_metadata


@pytest.fixture(scope="module")
def profile_path(tmp_path_factory):
    root = tmp_path_factory.mktemp("dm")
    generate_run(root / "run", 3000, 6)
    out = root / "profile.parquet"
    assert CliRunner().invoke(main, ["profile", str(root / "run"), "-o", str(out), "-q"]).exit_code == 0
    return out


def png_size(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


@pytest.mark.parametrize("extra", [[], ["--color-by", "correctness", "--no-marginals"], ["--max-points", "500"]])
def test_datamap_png(tmp_path, profile_path, extra):
    out = tmp_path / "map.png"
    result = CliRunner().invoke(main, ["datamap", str(profile_path), "-o", str(out), *extra])
    assert result.exit_code == 0, result.output + result.stderr
    width, height = png_size(out)
    assert width > 500 and height > 400


def test_thresholds_come_from_the_profile(profile_path):
    meta = profile_metadata(profile_path)
    t = meta["region_thresholds"]
    assert t["mode"] == "quantile" and 0 < t["variability"] < 0.5 and 0 < t["confidence"] < 1
    assert meta["runs"][0]["recorded_by"] == "synthetic"


def test_datamap_of_a_non_profile_fails_cleanly(tmp_path):
    bogus = tmp_path / "x.parquet"
    bogus.write_text("not parquet")
    result = CliRunner().invoke(main, ["datamap", str(bogus), "-o", str(tmp_path / "m.png")])
    assert result.exit_code == 2 and "x.parquet" in result.stderr and not (tmp_path / "m.png").exists()


def test_datamap_html_is_self_contained(tmp_path, profile_path):
    out = tmp_path / "map.html"
    result = CliRunner().invoke(main, ["datamap", str(profile_path), "-o", str(out)])
    assert result.exit_code == 0, result.output + result.stderr
    html = out.read_text()
    assert "<canvas" in html and "http://" not in html.replace("http://www.w3.org", "") and "https://" not in html

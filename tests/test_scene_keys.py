import pytest

from landuse_kedro.scene_keys import key_of_url, nlcd_key, nlcd_year, parse_scene_key, scene_key


def test_keys_round_trip():
    assert parse_scene_key(scene_key("middle_sex", 2016)) == ("middle_sex", 2016)
    assert nlcd_year(nlcd_key("2011")) == 2011 and nlcd_key(2011) == "nlcd_2011"
    assert key_of_url("abfss://c@a.dfs.core.windows.net/01_raw/naip/essex_2012.tif") == "essex_2012"


@pytest.mark.parametrize("key", ["essex", "essex_12", "essex-2012"])
def test_a_scene_key_without_region_and_year_is_refused(key):
    with pytest.raises(ValueError, match="<region>_<year>"):
        parse_scene_key(key)


@pytest.mark.parametrize("key", ["nlcd", "nlcd_2011_extra", "essex_2011"])
def test_an_nlcd_key_without_its_year_is_refused(key):
    with pytest.raises(ValueError, match="nlcd_<year>"):
        nlcd_year(key)

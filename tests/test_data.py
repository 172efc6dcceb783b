"""uiunet.data checks too slow for the notebooks: they decode a whole real dataset (about 10-20 s each), so they are
marked slow, and skip when the dataset is missing. Every other data check lives in nbs/00_data.io to 03_data.transforms."""
import numpy as np
import pytest

from conftest import data_dir, needs_dataset
from uiunet.data import NORM_STATS, get_dataset, norm_stats, read_split


@pytest.mark.slow
@needs_dataset("nudt-sirst")
def test_norm_stats_reproduce_basicirstd_nudt():
    "Decodes all 1,327 NUDT-SIRST images (the notebook's cell for it is `#| slow`)."
    mean, std = norm_stats("nudt-sirst", ("train", "test"))
    assert abs(mean * 255 - 107.80905) < 1e-3 and abs(std * 255 - 33.02275) < 1e-3    # BasicIRSTD's constants
    assert np.allclose((mean, std), NORM_STATS["nudt-sirst"], atol=5e-5)


@pytest.mark.slow
@needs_dataset("mdvsfa")
def test_mdvsfa_train_clean_rule_on_the_pairs_present():
    "Decodes every MDvsFA training pair to apply the cleaning rule."
    first = read_split(data_dir("mdvsfa") / "train.txt")[:2000]      # the 2,000 pairs of the shared copy
    clean = get_dataset("mdvsfa", "train_clean").names
    assert len(set(clean) & set(first)) == 1941                         # 59 of 2,000 removed
    assert {"000308_1", "000324_1"}.isdisjoint(clean)                   # negative / zero local contrast
    assert "000000_1" in clean
    sub = get_dataset("mdvsfa", "train_500").names
    assert len(sub) == 500 == len(set(sub)) and set(sub) <= set(clean)
    assert sub == sorted(sub, key=clean.index) and sub == get_dataset("mdvsfa", "train_500").names

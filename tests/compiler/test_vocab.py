"""ptqc.vocab: one definition of the shared names, each member equal to the string it replaced."""
import json

from ptqc.driver.config import QUANT_MODES as CONFIG_MODES
from ptqc.driver.mix import MODES
from ptqc.pass_manager import AnalysisStore
from ptqc.passes.calibration import OBSERVERS
from ptqc.vocab import (AUTO, HISTOGRAM, HISTOGRAM_METHODS, QUANT_MODES, REFERENCE_DEFAULT, Analysis, Meta, Method,
                        is_histogram)


def test_members_are_their_strings():
    assert Meta.QUANT == "quant" and hash(Meta.QUANT) == hash("quant")
    assert {"quant": 1}[Meta.QUANT] == 1 and Analysis.RANGE_OVERRIDES in {"range_overrides"}
    assert json.dumps({Method.KL: Method.MIN_MAX}) == '{"kl": "min_max"}'
    assert f"{Method.KL_V2}" == "kl_v2" and "%s" % Analysis.OBSERVERS == "observers"


def test_method_lists_derive_from_one_definition():
    # the -qm choices in the CLI's order (also -qm all's run order), exactly as before the enum
    assert QUANT_MODES == ("auto", "kl", "min_max", "mse", "percentile", "kl_v2", "removal_outlier", "all")
    assert CONFIG_MODES is QUANT_MODES and all(type(m) is str for m in QUANT_MODES)  # argparse shows repr
    assert set(OBSERVERS) == set(Method)
    assert set(HISTOGRAM_METHODS) == set(Method) - {Method.MIN_MAX}
    assert is_histogram(HISTOGRAM) and not is_histogram(Method.MIN_MAX) and not is_histogram(AUTO)
    assert HISTOGRAM == REFERENCE_DEFAULT == "kl"
    assert MODES == ("auto", "min_max", "kl", "kl_v2", "percentile", "mse")  # template rule 4


def test_store_copy_is_its_own():
    store = AnalysisStore({Analysis.OBSERVERS: {"x": 1}}, (Analysis.QUANT_SPECS,))
    other = store.copy()
    other[Analysis.MIX] = {}
    other.established.add(Analysis.OBSERVERS)
    assert Analysis.MIX not in store.results and store.established == {"quant_specs"}
    assert other["observers"] is store["observers"]  # values shared, entries not

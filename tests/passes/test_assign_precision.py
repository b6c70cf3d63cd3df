"""AssignPrecision: alone on a specced graph it re-specs every tensor at the bits its node
was given, keeping the rules; the units the rules tie together; trials that reuse the float
model's outputs."""
import re

import pytest

import builders
from checks import list_reader
import numpy as np

from ptqc.driver.config import QuantConfig
from ptqc.driver.quantize import quantize
from ptqc.passes import assign_precision as automix
from ptqc.passes.assign_precision import AssignPrecision
from ptqc.passes.mixed_precision import share_units
from ptqc.quant import QuantScheme
from ptqc.onnx_io import import_model
from ptqc.pass_manager import PassContext
from ptqc.passes import AssignQuantSpecs, InferShapes
from ptqc.runtime import ort as ort_runtime


def test_units_tie_the_inputs_of_a_node_and_the_ops_around_a_layernorm():
    graph = import_model(builders.mixed_rules_model())
    InferShapes().run(graph, PassContext())
    AssignQuantSpecs().run(graph, PassContext())
    keys = [n.name for n in graph.topological_order() if n.meta.get("mixable")]
    units = {frozenset(u) for u in share_units(graph, keys)}
    # rule 5: g1, ln, g2 and cat around the LayerNormalization; rule 7: g3 and g4 feed the Add;
    # rule 7 at cat: ln and g2 (already together)
    assert units == {frozenset({"g1", "ln", "g2", "cat"}), frozenset({"g3", "g4"}), frozenset({"add"})}


def test_alone_on_a_specced_graph_it_respecs_every_tensor_at_its_nodes_bits():
    """IOhigh with half the nodes high, run alone: g1 (nearest the input) goes to 16 bits, and
    with it, by rule 5, every quantized op around the LayerNormalization; each output spec
    follows its node, and a given mix with the same assignment gives the same specs."""
    graph = import_model(builders.mixed_rules_model())
    ctx = PassContext()
    InferShapes().run(graph, ctx)
    scheme = QuantScheme(activation_dtype=np.dtype(np.int8), activation_symmetric=True)
    AssignQuantSpecs(scheme).run(graph, ctx)
    AssignPrecision(scheme, strategy="IOhigh", amount=0.3).run(graph, ctx)
    mix = ctx.analyses["mix"]
    high = {k for k, (b, _) in mix.items() if b == 16}
    assert {"g1", "ln", "g2", "cat"} <= high and "add" not in high
    out = {n.name: n.outputs[0] for n in graph.nodes()}
    for key, (bits, _) in mix.items():
        assert graph.value(out[key]).meta["qspec"].dtype == np.dtype(np.int16 if bits == 16 else np.int8), key
    specs = {v.name: v.meta.get("qspec") for v in graph.values()}
    again = import_model(builders.mixed_rules_model())
    InferShapes().run(again, PassContext())
    AssignQuantSpecs(scheme).run(again, PassContext())
    AssignPrecision(scheme, mix=mix).run(again, PassContext())
    assert {v.name: v.meta.get("qspec") for v in again.values()} == specs


def test_trials_run_the_float_model_once_per_batch(tmp_path, digits, monkeypatch):
    feeds = [{"input": digits.x_train[i:i + 8]} for i in range(0, 32, 8)]
    captured = {}
    original = automix.Trials.__init__

    def keep(self, *a, **kw):
        original(self, *a, **kw)
        captured["trials"] = self

    monkeypatch.setattr(automix.Trials, "__init__", keep)
    cfg = QuantConfig(chip="TX5368AV200", target_cosine=0.999, output_dequant=True)
    quantize(digits.model, None, list_reader(feeds), cfg, evaluate=False)
    trials = captured["trials"]
    runs = []
    run = ort_runtime.OrtRunner.run
    monkeypatch.setattr(ort_runtime.OrtRunner, "run", lambda self, f: runs.append(1) or run(self, f))
    first = trials.cosine(set(trials.keys[:2]))
    again = trials.cosine(set(trials.keys[:2]))
    scored = trials.ctx.analyses["validation_feeds"]  # the batches calibration held out
    assert 0 < len(scored) < len(feeds)
    assert first == again and len(runs) == 2 * len(scored)  # quantized runs only: the float outputs are kept
    # the target is checked on the held-out and the kept calibration batches: never a higher minimum
    kept = trials.ctx.analyses["calibration_feeds"]
    runs.clear()
    checked = trials.cosine(set(trials.keys[:2]), check=True)
    assert kept and len(runs) == len(scored) + len(kept) and checked <= first
    assert trials.cosine(set(trials.keys)) >= trials.cosine(set()) - 1e-6


def test_data_that_cannot_be_read_again_is_refused_by_flag(digits):
    """The searches read the calibration data again; a reader without rewind() cannot be, and
    an empty second pass must not read as "the target already holds"."""
    from ptqc.errors import ConfigError

    class OneShot:
        def __init__(self, feeds):
            self.it = iter(feeds)

        def get_next(self):
            return next(self.it, None)

    feeds = [{"input": digits.x_train[i:i + 16]} for i in range(0, 32, 16)]
    for kw, flag in [(dict(target_cosine=0.999), "--target-cosine"),
                     (dict(auto_mix_strategy="HAWQ"), "-ams/--auto-mix-strategy HAWQ"),
                     (dict(bias_correction=True), "--bias-correction")]:
        with pytest.raises(ConfigError, match=f"^{re.escape(flag)}: the calibration data cannot be read again"):
            quantize(digits.model, None, OneShot(feeds), QuantConfig(chip="TX5368AV200", **kw), evaluate=False)

"""The <analysis> format: render/parse round trip and the strict parser on malformed blocks."""

from __future__ import annotations

import pytest

from chaosbench.detectors.analyzer.output import (
    FORMAT_ID,
    Analysis,
    AnalysisFormatError,
    ChainStep,
    no_anomaly,
    parse,
    render,
)

COMPONENTS = {"ingress", "node-0", "node-1", "rank-0", "rank-1", "rank-2", "rank-3"}

VALID = f"""Some reasoning the model wrote first.
<analysis>
format: {FORMAT_ID}
chain:
1. symptom | ingress | TTFT rose (ingress_latency z=+12)
2. effect | rank-0, rank-1, rank-3 | peers wait in all-reduce | for rank-2
3. cause | rank-2 | SM clock locked low
root_cause: rank-2
fault_class: gpu-clock-lock
category: GPU
confidence: 0.8
</analysis>
trailing words"""


def test_valid_block_parses_with_prose_around_it():
    a = parse(VALID, COMPONENTS)
    assert a.fault_class == "gpu-clock-lock" and a.root_cause == "rank-2" and a.category == "GPU"
    assert [s.kind for s in a.chain] == ["symptom", "effect", "cause"]
    assert a.chain[1].components == ("rank-0", "rank-1", "rank-3")
    assert a.chain[1].text == "peers wait in all-reduce | for rank-2"
    assert a.confidence == pytest.approx(0.8)


def test_render_round_trips():
    a = Analysis(
        (ChainStep("symptom", (), "latency up"), ChainStep("effect", ("rank-1",), "a|b"),
         ChainStep("cause", ("node-1",), "cpu hog")),
        "node-1", "cpu-contention", "CPU", 0.456,
    )
    back = parse(render(a), COMPONENTS)
    assert back.root_cause == "node-1" and back.fault_class == "cpu-contention"
    assert back.chain[0].components == () and back.chain[1].text == "a/b"
    assert back.confidence == pytest.approx(0.46)


def test_no_anomaly_is_the_same_format():
    text = render(no_anomaly("nothing moved"))
    a = parse(text)
    assert a.fault_class == "none" and a.root_cause == "none" and a.category == "none"
    assert a.chain[0].text.startswith("no anomaly detected")


def _mutate(old: str, new: str) -> str:
    assert old in VALID
    return VALID.replace(old, new)


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("no block at all", "exactly one"),
        (VALID + VALID, "found 2"),
        (_mutate("confidence: 0.8\n", ""), "missing key(s) confidence"),
        (_mutate("confidence: 0.8", "confidence: high"), "not a number"),
        (_mutate("confidence: 0.8", "confidence: 1.5"), "outside [0, 1]"),
        (_mutate("category: GPU", "category: CPU"), "does not match"),
        (_mutate("fault_class: gpu-clock-lock", "fault_class: gpu-melted"), "not a catalog fault id"),
        (_mutate("root_cause: rank-2", "root_cause: rank-9"), "not a known component"),
        (_mutate("root_cause: rank-2", "root_cause: rank-1"), "not a component of the cause step"),
        (_mutate("3. cause", "4. cause"), "numbered 4, expected 3"),
        (_mutate("1. symptom", "1. effect"), "must be symptom, effect..., cause"),
        (_mutate("2. effect | rank-0, rank-1, rank-3", "2. effect | rank-0, gpu_7"), "not a component name"),
        (_mutate("2. effect | rank-0, rank-1, rank-3", "2. effect | rank-0, rank-7"), "unknown component"),
        (_mutate("format: chaosbench-analysis/v1", "format: v0"), "format is"),
        (_mutate("category: GPU", "category: GPU\nnotes: x"), "unknown key"),
        (_mutate("category: GPU", "category: GPU\ncategory: GPU"), "duplicate key"),
        (_mutate("3. cause | rank-2 | SM clock locked low", "because the clock is low"), "unexpected line"),
        (_mutate("chain:", "chain: 1. symptom"), "followed by numbered steps"),
    ],
)
def test_malformed_blocks_are_refused_with_a_reason(text: str, why: str):
    with pytest.raises(AnalysisFormatError) as err:
        parse(text, COMPONENTS)
    msg = str(err.value)
    assert why in msg and "\n" not in msg


def test_none_class_needs_the_no_anomaly_step():
    bad = render(no_anomaly("x")).replace("none | - | no anomaly detected", "none | - | all good")
    with pytest.raises(AnalysisFormatError, match="no anomaly detected"):
        parse(bad)

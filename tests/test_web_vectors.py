"""The committed web test vectors must equal what the Python engine computes now.

web/tests/vectors.json feeds the JavaScript tests (node --test web/tests/) that pin the canvas
plot's math to engine/sampling/schedule.py. If the engine changes, this test fails until the vectors are
regenerated with ``python scripts/make_web_vectors.py``.
"""
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

import make_web_vectors  # noqa: E402


def _committed() -> dict:
    return json.loads(make_web_vectors.VECTORS_PATH.read_text())


def test_committed_vectors_equal_the_engine():
    fresh = make_web_vectors.build_vectors()
    committed = _committed()
    assert committed["errors"] == fresh["errors"], "error cases drifted; run python scripts/make_web_vectors.py"
    assert len(committed["schedules"]) == len(fresh["schedules"])
    for old, new in zip(committed["schedules"], fresh["schedules"]):
        key = (new["scheduler"], new["steps"], new["shift"])
        assert old == new, f"vectors for {key} drifted from the engine; run python scripts/make_web_vectors.py"


def test_committed_text_is_what_the_script_writes():
    # Byte equality catches hand edits that happen to parse to the same numbers' neighbours.
    assert make_web_vectors.VECTORS_PATH.read_text() == make_web_vectors.dumps(make_web_vectors.build_vectors())


def _find(scheduler: str, steps: int, shift: float) -> dict:
    for entry in _committed()["schedules"]:
        if (entry["scheduler"], entry["steps"], entry["shift"]) == (scheduler, steps, shift):
            return entry
    raise AssertionError(f"no vectors for {scheduler} steps={steps} shift={shift}")


def test_vectors_hold_the_spec_defaults():
    # Spec §1.3 (verified against the official code): T2V 40 steps shift 12 -> 26 high-noise
    # steps at boundary 0.875; I2V 40 steps shift 5 -> 15 at 0.900.
    t2v = _find("wan", 40, 12.0)
    assert t2v["timesteps"][24:27] == [888, 877, 865]
    assert [0.875, -1, 26] in t2v["switches"]
    i2v = _find("wan", 40, 5.0)
    assert i2v["timesteps"][13:16] == [911, 902, 892]
    assert [0.9, -1, 15] in i2v["switches"]


def test_vectors_cover_the_edges():
    entries = _committed()["schedules"]
    switches = [tuple(s) for e in entries for s in e["switches"]]
    assert any(e["steps"] == 1 for e in entries)
    assert any(b == 1.0 and k == -1 and r == 0 for b, k, r in switches), "boundary above the first timestep"
    assert any(b == 0.0 and k == -1 and r > 0 for b, k, r in switches), "boundary below the last timestep"
    assert any(k >= 0 for _, k, _ in switches), "explicit switch_step overrides"
    assert {e["scheduler"] for e in entries} == {"wan", "simple"}

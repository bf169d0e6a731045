"""The soak's judge over recorded samples: slowdown, clock drop, temperature, error growth, noise."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_rigcheck.errors import ProfileError
from pytest_rigcheck.soak.judge import (
    COL,
    FIELDS,
    GpuSamples,
    SoakExpect,
    SoakRecord,
    judge,
    parse_duration,
    parse_soak,
    progress_line,
    windowed_medians,
)
from pytest_rigcheck.soak.models import samples
from pytest_rigcheck.verdict import Status

BDF = "0000:4b:00.0"


def record(rows, **kw) -> SoakRecord:
    return SoakRecord(
        float(len(rows)), 1.0, "test", "completed", {BDF: GpuSamples(BDF, 0, "GPU", rows, **kw)}, "test"
    )


def run(rows, expect: SoakExpect | None = None, **kw):
    return judge(record(rows, **kw), BDF, "GPU1 0000:4b:00.0", expect or SoakExpect())


def test_healthy_model_passes_with_figures():
    v = run(samples(1))
    assert v.status == Status.PASS, str(v)
    assert v.properties["soak_sm_mhz"]["median"] > 1850
    assert len(v.properties["soak_curve"]) == 300
    assert v.measured_value is not None and v.expected_value == 0.10


def test_throttling_that_starts_late_fails():
    """Held-out case of issue 12: thermal slowdown only in the last fifth of the run."""
    v = run(samples(2, throttle_from=240))
    assert v.status == Status.FAIL
    assert "HW thermal slowdown (0x40)" in v.summary and "from 240 s" in v.summary
    assert any("cooling" in f for f in v.fix)


def test_slow_clock_decay_fails():
    """Held-out case of issue 12: the SM clock slides 14% over the run with no reason bit set."""
    v = run(samples(3, decay_to=1640))
    assert v.status == Status.FAIL
    assert "sustained SM clock fell" in v.summary and "allowed 10%" in v.summary


def test_decay_within_the_stated_drop_passes():
    assert run(samples(3, decay_to=1800)).status == Status.PASS  # 5.5% < 10%
    assert run(samples(3, decay_to=1640), SoakExpect(max_clock_drop=0.2)).status == Status.PASS


def test_single_slowdown_sample_is_noise():
    rows = samples(4)
    rows[100][COL["reasons"]] = 0x40
    assert run(rows).status == Status.PASS
    rows[101][COL["reasons"]] = 0x40
    assert run(rows).status == Status.FAIL


def test_temperature_limit_from_profile():
    v = run(samples(5), SoakExpect(max_temp_c=65, source="[soak] of rig.toml"))
    assert v.status == Status.FAIL and "above 65 C ([soak] of rig.toml)" in v.summary
    assert run(samples(5), SoakExpect(max_temp_c=80)).status == Status.PASS


def test_replay_counter_growth_fails():
    rows = samples(6)
    for r in rows[150:]:
        r[COL["replay"]] = 3
    v = run(rows)
    assert v.status == Status.FAIL and "PCIe replay counter grew 0 -> 3" in v.summary


def test_aer_growth_names_the_hop():
    rows = samples(7)
    for r in rows[200:]:
        r[COL["aer_cor"]] = 5
    hops = {
        "0000:00:03.1": {"start": [0, 0, 0], "end": [5, 0, 0]},
        BDF: {"start": [0, 0, 0], "end": [0, 0, 0]},
    }
    v = run(rows, aer_hops=hops)
    assert v.status == Status.FAIL and "AER correctable grew" in v.summary and "on 0000:00:03.1" in v.summary
    assert any("riser" in f for f in v.fix)


@pytest.mark.parametrize(
    ("change", "why"),
    [
        (lambda rows: rows[10].__setitem__(COL["sm_mhz"], -5), "sm_mhz = -5"),
        (lambda rows: rows[10].__setitem__(COL["temp_c"], 900), "temp_c = 900"),
        (lambda rows: rows[10].__setitem__(COL["t_s"], 3.0), "does not follow"),
        (lambda rows: rows[10].__setitem__(COL["replay"], -1), "replay = -1"),
        (lambda rows: rows[10].__setitem__(COL["sm_mhz"], float("nan")), "sm_mhz = nan"),
    ],
)
def test_impossible_samples_are_unreadable(change, why):
    rows = samples(8)
    change(rows)
    v = run(rows)
    assert v.status == Status.UNREADABLE and why in v.summary


def test_counter_falling_is_corrupt():
    rows = samples(8)
    rows[5][COL["replay"]] = 4
    v = run(rows)
    assert v.status == Status.UNREADABLE and "never falls" in v.summary


def test_too_few_samples_and_missing_gpu():
    assert run(samples(9, seconds=4)).status == Status.UNREADABLE
    rec = record(samples(9))
    assert judge(rec, "0000:21:00.0", "GPU0", SoakExpect()).status == Status.UNREADABLE
    rec.gpus[BDF].unavailable = "torch is not installed"
    assert "torch is not installed" in judge(rec, BDF, "GPU1", SoakExpect()).summary


def test_samples_past_the_duration_are_corrupt():
    """A record whose samples run to 299 s while it says the soak lasted 3 s contradicts itself."""
    rec = record(samples(8))
    rec.duration_s = 3.0
    v = judge(rec, BDF, "GPU1", SoakExpect())
    assert v.status == Status.UNREADABLE and "duration_s = 3 s (contradictory)" in v.summary, v.summary


def test_completed_soak_short_of_its_duration_is_corrupt():
    """FRESH3 F-So2: a record saying the soak completed 300 s, holding 9 s of samples, contradicts itself;
    the same samples stopped early with the reason in ``stopped`` are judged."""
    rec = record(samples(8))
    rec.gpus[BDF].samples = rec.gpus[BDF].samples[:10]
    v = judge(rec, BDF, "GPU1", SoakExpect())
    assert v.status == Status.UNREADABLE and "completed its duration_s = 300 s" in v.summary, v.summary
    assert "samples end at 9 s" in v.summary
    rec.stopped = "interrupted after 10 s (Ctrl-C)"
    assert judge(rec, BDF, "GPU1", SoakExpect()).status == Status.PASS
    rec = record(samples(8, seconds=280))
    rec.duration_s = 300.0  # a tenth short: a slow NVML read, not a contradiction
    assert judge(rec, BDF, "GPU1", SoakExpect()).status == Status.PASS


@pytest.mark.parametrize(("sm", "power_w"), [(0, 340), (50, 200), (0, None)])
def test_sm_clock_of_zero_under_load_is_unreadable(sm, power_w):
    """FRESH3 F-So3: an SM clock of 0 MHz for the whole soak while drawing 340 W is no reading, never "held"
    (0% drop of 0 MHz); without a power reading, a baseline that low is no evidence either."""
    rows = samples(8)
    for r in rows:
        r[COL["sm_mhz"]] = sm
        r[COL["power_mw"]] = None if power_w is None else power_w * 1000
    v = run(rows)
    assert v.status == Status.UNREADABLE, str(v)
    assert f"sm_mhz = {sm} MHz while power_mw" in v.summary if power_w else "SM clock 0 MHz" in v.summary


@pytest.mark.parametrize(
    ("col", "value", "why"),
    [
        (
            "gen",
            5,
            "sample 0: gen = 5 (Gen5) is above the link's own maximum 0000:4b:00.0 max_link_speed = 4 (Gen4)",
        ),
        (
            "width",
            32,
            "sample 0: width = 32 (x32) is above the link's own maximum 0000:4b:00.0 max_link_width = 16",
        ),
        ("width", 3, "sample 0: width = 3 is not a PCIe link width"),
    ],
)
def test_soak_link_above_the_gpu_maximum_is_corrupt(col, value, why):
    """FRESH3 So8: soak samples at Gen5 or x32 on a GPU whose link is at most Gen4 x16 are corrupt."""
    rows = samples(8)
    for r in rows:
        r[COL[col]] = value
    link_max = (4, 16, (f"{BDF} max_link_speed", f"{BDF} max_link_width"))
    v = judge(record(rows), BDF, "GPU1", SoakExpect(), link_max=link_max)
    assert v.status == Status.UNREADABLE and why in v.summary, v.summary
    assert judge(record(samples(8)), BDF, "GPU1", SoakExpect(), link_max=link_max).status == Status.PASS


def test_two_gpus_with_one_index_are_corrupt():
    rec = record(samples(8))
    rec.gpus["0000:21:00.0"] = GpuSamples("0000:21:00.0", 0, "GPU", samples(8))
    with pytest.raises(ValueError, match="two GPUs have one NVML index"):
        SoakRecord.from_json(rec.to_json(), "x")


def test_interrupted_soak_judges_what_was_sampled():
    rec = record(samples(11, seconds=40))
    rec.stopped = "interrupted after 43 s (Ctrl-C)"
    v = judge(rec, BDF, "GPU1", SoakExpect())
    assert v.status == Status.PASS and any("interrupted after 43 s" in n for n in v.notes)


def test_record_round_trips_through_json():
    rec = record(samples(12, seconds=20), aer_hops={BDF: {"start": [0, 0, 0], "end": [1, 0, 0]}})
    back = SoakRecord.from_json(rec.to_json(), "x")
    assert (
        back.gpus[BDF].samples == rec.gpus[BDF].samples and back.gpus[BDF].aer_hops == rec.gpus[BDF].aer_hops
    )


@pytest.mark.parametrize(
    "data",
    [
        {},
        {"format": 1, "fields": ["t_s"]},
        {"format": 1, "fields": list(FIELDS), "duration_s": 10, "interval_s": 0, "gpus": {}},
        {
            "format": 1,
            "fields": list(FIELDS),
            "duration_s": 10,
            "interval_s": 1,
            "gpus": {BDF: {"samples": [[1]]}},
        },
    ],
)
def test_corrupt_records_raise(data):
    with pytest.raises(ValueError):
        SoakRecord.from_json(data, "x")


@pytest.mark.parametrize(
    ("text", "seconds"), [("600", 600), ("90s", 90), ("10m", 600), ("1.5h", 5400), ("off", 0), ("0", 0)]
)
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["ten", "5", "-60", "25h", "10 minutes"])
def test_bad_durations(text):
    with pytest.raises(ValueError, match="600, 90s|24 h"):
        parse_duration(text)


def test_profile_section():
    e = parse_soak({"max_clock_drop": 0.15, "max_temp_c": 83}, "rig.toml")
    assert (e.max_clock_drop, e.max_temp_c, e.source) == (0.15, 83.0, "[soak] of rig.toml")
    for table, key in (
        ({"max_clock_drop": 2}, "soak.max_clock_drop"),
        ({"max_temp": 80}, "soak.max_temp"),
        ({"max_temp_c": "hot"}, "soak.max_temp_c"),
    ):
        with pytest.raises(ProfileError) as exc:
            parse_soak(table, "rig.toml")
        assert exc.value.key == key


def test_windowed_medians_ignore_one_dip():
    times = [float(t) for t in range(30)]
    vals = [1900.0] * 30
    vals[12] = 1000.0
    assert min(m for _, m in windowed_medians(times, vals, 10)) == 1900.0


def test_progress_line():
    row = samples(1, seconds=1)[0]
    row[COL["reasons"]] = 0x40
    line = progress_line(42, 600, {"GPU0": row})
    assert line.startswith("soak 42/600 s  GPU0 ") and "MHz" in line and "HW thermal slowdown" in line


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    seconds=st.integers(20, 400),
    jitter=st.floats(0, 60),
    dips=st.floats(0, 0.08),
    blip=st.integers(0, 399),
    blip_bit=st.sampled_from([0x8, 0x20, 0x40, 0x80]),
)
def test_healthy_noise_never_alarms(seed, seconds, jitter, dips, blip, blip_bit):
    """Normal noise: SM clock jitter up to +-60 MHz, up to 8% of samples dipping 150 MHz, power and
    temperature noise, the SW power cap on and off, one stray slowdown sample: never a failure."""
    import random

    rnd = random.Random(seed)
    rows = samples(seed, seconds)
    for r in rows:
        r[COL["sm_mhz"]] = round(1900 + rnd.uniform(-jitter, jitter) - (150 if rnd.random() < dips else 0))
    rows[blip % seconds][COL["reasons"]] |= blip_bit
    v = run(rows, SoakExpect(max_temp_c=83))
    assert v.status == Status.PASS, str(v)


def test_hop_with_no_aer_reading_is_unreadable():
    """FRESH4 finding 4 (unit): a hop on the GPU's path whose AER counters the kernel keeps (``aer_path``)
    with no reading in ``aer_hops`` cannot be ruled out as growing: UNREADABLE naming it, in linkhealth's
    words. A hop the kernel keeps no counters for (no AER capability) is not in ``aer_path``: no demand."""
    hops = {BDF: {"start": [0, 0, 0], "end": [0, 0, 0]}}
    rec = record(samples(1), aer_hops=hops)
    ok = judge(rec, BDF, "GPU1", SoakExpect(), aer_path=[BDF])
    assert ok.status == Status.PASS, str(ok)
    v = judge(rec, BDF, "GPU1", SoakExpect(), aer_path=["0000:00:03.1", BDF])
    assert v.status == Status.UNREADABLE, str(v)
    assert (
        "AER counters of 0000:00:03.1 were read at the start but the soak record (test) aer_hops" in v.summary
    )
    assert "cannot tell whether they grew" in v.summary


def test_link_falling_under_sustained_load_fails():
    """FRESH5: the GPU's link at x8 in 250 of 300 soak samples passed "held": nothing read the soak's link
    columns. A sample below the soak's own best, after the link reached it, fails naming the drop."""
    rows = samples(1)
    for r in rows[50:]:
        r[COL["width"]] = 8
    v = run(rows)
    assert v.status == Status.FAIL and "link width fell below x16 in 250 of 300 samples" in v.summary, (
        v.summary
    )


def test_link_training_up_as_the_load_starts_passes():
    rows = samples(1)
    rows[0][COL["gen"]] = 1  # idle speed in the first sample, before the load
    assert run(rows).status == Status.PASS


def test_aer_growth_in_a_hop_fails_even_where_the_sums_do_not_show_it():
    """FRESH5: a hop's own AER end count above its start (aer_hops) passed when the samples' sums did not
    grow: either record of growth fails, naming the hop."""
    v = run(samples(1), aer_hops={"0000:00:01.1": {"start": [0, 0, 0], "end": [0, 2, 0]}})
    assert v.status == Status.FAIL and "AER non-fatal grew" in v.summary and "0000:00:01.1" in v.summary, (
        v.summary
    )

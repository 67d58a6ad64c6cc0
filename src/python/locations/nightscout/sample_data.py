"""Deterministic, physiologically plausible sample CGM data for the demo and the tests.

Glucose follows a slow baseline drift, a dawn rise, three meal excursions a day whose size and
timing vary by day, an occasional nocturnal low, and sensor noise. On top of the readings every
5 minutes the data carry what real Nightscout sites carry: a daily finger-stick (`mbg`) entry,
Dexcom sensor error codes (sgv 9, 10, 12), a two-hour sensor gap every fifth day, and readings
uploaded a second time by another uploader (same `date`, different `_id`). Everything is a pure
function of time and zone, so any window can be served without storing anything.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
import random
from collections.abc import Iterator
from zoneinfo import ZoneInfo

INTERVAL_MS = 5 * 60 * 1000
OFFSET_MS = 37_000  # readings land 37 s after each 5-minute mark, as a real sensor's do
PRIMARY_DEVICE = "share2"
SECOND_UPLOADER = "xDrip-DexcomG6"
DIRECTIONS = (
    (3.0, "DoubleUp", 1),
    (2.0, "SingleUp", 2),
    (1.0, "FortyFiveUp", 3),
    (-1.0, "Flat", 4),
    (-2.0, "FortyFiveDown", 5),
    (-3.0, "SingleDown", 6),
)


def _gauss_bump(hours: float, centre: float, width: float) -> float:
    return math.exp(-0.5 * ((hours - centre) / width) ** 2)


def _meal_response(hours_since: float, amplitude: float) -> float:
    if hours_since <= 0:
        return 0.0
    peak = 0.9
    return amplitude * (hours_since / peak) * math.exp(1 - hours_since / peak)


def _day_params(day: dt.date) -> dict[str, float]:
    rng = random.Random(f"phlo-sample-{day.isoformat()}")
    return {
        "breakfast": 7.3 + rng.uniform(-0.6, 0.6),
        "breakfast_amp": rng.uniform(35, 110),
        "lunch": 12.5 + rng.uniform(-0.7, 0.7),
        "lunch_amp": rng.uniform(25, 90),
        "dinner": 18.8 + rng.uniform(-0.8, 0.8),
        "dinner_amp": rng.uniform(45, 150),
        "night_low": 70.0 if day.toordinal() % 6 == 0 else 0.0,
    }


def glucose_at(epoch_ms: int, tz: ZoneInfo) -> int:
    """The sample person's sensor glucose (mg/dL) at an instant, clamped to a sensor's 40-400."""
    local = dt.datetime.fromtimestamp(epoch_ms / 1000, tz)
    hours = local.hour + local.minute / 60 + local.second / 3600
    p = _day_params(local.date())
    days = epoch_ms / 86_400_000
    value = 112 + 12 * math.sin(2 * math.pi * days / 3.3)
    value += 22 * _gauss_bump(hours, 6.0, 1.4)
    value += _meal_response(hours - p["breakfast"], p["breakfast_amp"])
    value += _meal_response(hours - p["lunch"], p["lunch_amp"])
    value += _meal_response(hours - p["dinner"], p["dinner_amp"])
    value -= p["night_low"] * _gauss_bump(hours, 3.2, 0.6)
    value += random.Random(epoch_ms).gauss(0, 4)
    return int(round(min(400.0, max(40.0, value))))


def _object_id(*parts: object) -> str:
    return hashlib.sha1("|".join(map(str, parts)).encode()).hexdigest()[:24]


def _direction(rate_per_min: float) -> tuple[str, int]:
    for threshold, name, trend in DIRECTIONS:
        if rate_per_min > threshold:
            return name, trend
    return "DoubleDown", 7


def _in_sensor_gap(local: dt.datetime) -> bool:
    return local.date().toordinal() % 5 == 2 and 2 <= local.hour < 4


def _entry(epoch_ms: int, tz: ZoneInfo, device: str, sgv: int, entry_type: str = "sgv") -> dict:
    moment = dt.datetime.fromtimestamp(epoch_ms / 1000, dt.UTC)
    local = moment.astimezone(tz)
    offset = local.utcoffset() or dt.timedelta(0)
    entry: dict = {
        "_id": _object_id(epoch_ms, device, entry_type),
        "type": entry_type,
        "date": epoch_ms,
        "dateString": moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z",
        "device": device,
        "utcOffset": int(offset.total_seconds() // 60),
        "sysTime": moment.isoformat().replace("+00:00", "Z"),
    }
    if entry_type == "mbg":
        entry["mbg"] = sgv
        return entry
    previous = glucose_at(epoch_ms - INTERVAL_MS, tz)
    direction, trend = _direction((sgv - previous) / 5)
    entry.update({"sgv": sgv, "direction": direction, "trend": trend, "noise": 1})
    return entry


def entries_between(start_ms: int, end_ms: int, tz: ZoneInfo) -> Iterator[dict]:
    """Every entry with start_ms <= date < end_ms, oldest first."""
    first = ((start_ms - OFFSET_MS) // INTERVAL_MS) * INTERVAL_MS + OFFSET_MS
    if first < start_ms:
        first += INTERVAL_MS
    for epoch_ms in range(first, end_ms, INTERVAL_MS):
        local = dt.datetime.fromtimestamp(epoch_ms / 1000, tz)
        if _in_sensor_gap(local):
            continue
        slot = epoch_ms // INTERVAL_MS
        if slot % 397 == 11:
            # A Dexcom error code (absolute deviation, power deviation, bad RF) instead of a
            # reading.
            yield _entry(epoch_ms, tz, PRIMARY_DEVICE, (9, 10, 12)[slot % 3])
            continue
        sgv = glucose_at(epoch_ms, tz)
        yield _entry(epoch_ms, tz, PRIMARY_DEVICE, sgv)
        if slot % 173 == 5:
            yield _entry(epoch_ms, tz, SECOND_UPLOADER, sgv)
        if local.hour == 7 and local.minute < 5:
            yield _entry(epoch_ms + 60_000, tz, "meter", sgv + 6, entry_type="mbg")

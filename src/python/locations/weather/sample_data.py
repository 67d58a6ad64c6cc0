"""Deterministic, plausible sample hourly weather for the demo and the tests.

`hourly_values(latitude, longitude, hour)` gives Open-Meteo's hourly variables for one instant:
a seasonal baseline by latitude and day of year, a diurnal cycle on local solar time (coldest
near 05:00, warmest near 15:00), day-to-day anomalies, slowly drifting pressure, and rain spells
of several hours that come more often when the pressure is low. Every value is a pure function
of the place and the instant (per-day randomness is seeded by a hash of place and day), so any
window can be served without storing anything.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
import random
from functools import lru_cache
from typing import NamedTuple

VARIABLES = (
    "temperature_2m",
    "relative_humidity_2m",
    "precipitation",
    "weather_code",
    "wind_speed_10m",
    "pressure_msl",
)
UNITS: dict[str, str] = {
    "time": "iso8601",
    "temperature_2m": "°C",
    "relative_humidity_2m": "%",
    "precipitation": "mm",
    "weather_code": "wmo code",
    "wind_speed_10m": "km/h",
    "pressure_msl": "hPa",
}

_TWO_PI = 2 * math.pi
_WARMEST_DAY = 200.0  # days after 1 January 1970 (20 July): the northern summer's peak
_YEAR_DAYS = 365.2422


class _Place(NamedTuple):
    lat: float
    lon: float
    mean_temperature: float
    seasonal_amplitude: float  # half the summer-winter difference (°C)
    variability: float  # scales day-to-day anomalies: small in the tropics
    storminess: float  # scales the pressure swings: calm tropics, stormy mid-latitudes
    phases: tuple[float, float, float, float]
    humidity_bias: float
    wind_factor: float
    rain_bias: float


class _Day(NamedTuple):
    temperature_anomaly: float
    cloud: float
    humidity: float
    wind: float
    rain_start: float  # local solar hour the spell starts; negative: a dry day
    rain_hours: int
    rain_peak: float  # mm/h at the spell's height
    showers: bool


def _rng(*parts: object) -> random.Random:
    digest = hashlib.blake2b("|".join(map(str, parts)).encode(), digest_size=8).digest()
    return random.Random(int.from_bytes(digest, "big"))


@lru_cache(maxsize=256)
def _place(lat: float, lon: float) -> _Place:
    rng = _rng("phlo-weather-place", f"{lat:.4f}", f"{lon:.4f}")
    abs_lat = abs(lat)
    return _Place(
        lat=lat,
        lon=lon,
        mean_temperature=27.5
        - 0.42 * max(0.0, abs_lat - 12.0)
        - 0.15 * max(0.0, abs_lat - 55.0)
        + rng.uniform(-1.5, 1.5),
        seasonal_amplitude=1.0 + 0.14 * abs_lat,
        variability=0.4 + 0.6 * min(1.0, abs_lat / 40.0),
        storminess=0.35 + 0.65 * min(1.0, abs_lat / 50.0),
        phases=(
            rng.uniform(0, _TWO_PI),
            rng.uniform(0, _TWO_PI),
            rng.uniform(0, _TWO_PI),
            rng.uniform(0, _TWO_PI),
        ),
        humidity_bias=rng.uniform(-8.0, 8.0),
        wind_factor=rng.uniform(0.8, 1.3),
        rain_bias=rng.uniform(-0.08, 0.08),
    )


def _pressure(place: _Place, days: float) -> float:
    """Mean sea-level pressure (hPa): a sum of slow waves, 2-13 days long."""
    p1, p2, p3, _ = place.phases
    swing = (
        11.0 * math.sin(_TWO_PI * days / 5.7 + p1)
        + 6.0 * math.sin(_TWO_PI * days / 2.3 + p2)
        + 4.0 * math.sin(_TWO_PI * days / 13.1 + p3)
    )
    return 1013.0 + place.storminess * swing


def _season(place: _Place, days: float) -> float:
    """+1 at the local summer's peak, -1 at the winter's."""
    return math.cos(_TWO_PI * (days - _WARMEST_DAY) / _YEAR_DAYS) * (
        1.0 if place.lat >= 0 else -1.0
    )


@lru_cache(maxsize=4096)
def _day(place: _Place, day: int) -> _Day:
    """The random draws of one local solar day (days since 1970-01-01)."""
    rng = _rng("phlo-weather-day", f"{place.lat:.4f}", f"{place.lon:.4f}", day)
    anomaly = rng.gauss(0.0, 2.2)
    cloud = rng.random()
    humidity = rng.uniform(55.0, 85.0) + place.humidity_bias
    wind = rng.uniform(3.0, 22.0) * place.wind_factor
    wet, showery = rng.random(), rng.random()
    shower_start, rain_start = rng.uniform(11.0, 16.0), rng.uniform(0.0, 23.0)
    shower_hours, rain_hours = rng.randint(3, 5), rng.randint(3, 9)
    shower_peak, rain_peak = rng.uniform(1.0, 6.0), rng.uniform(0.3, 4.0)
    # Low pressure brings rain: about a third of days at average pressure, most in a deep low.
    noon_pressure = _pressure(place, day + 0.5)
    chance = min(0.85, max(0.05, 0.33 + (1010.0 - noon_pressure) / 22.0 + place.rain_bias))
    if wet >= chance:
        return _Day(anomaly, cloud, humidity, wind, -1.0, 0, 0.0, False)
    showers = showery < 0.2 + 0.45 * max(0.0, _season(place, day + 0.5))
    if showers:
        return _Day(anomaly, cloud, humidity, wind, shower_start, shower_hours, shower_peak, True)
    return _Day(anomaly, cloud, humidity, wind, rain_start, rain_hours, rain_peak, False)


def _diurnal(solar_hour: float) -> float:
    """-1 at 05:00, +1 at 15:00 local solar time: a quicker morning rise, a slower evening fall."""
    if 5.0 <= solar_hour < 15.0:
        return -math.cos(math.pi * (solar_hour - 5.0) / 10.0)
    return math.cos(math.pi * ((solar_hour - 15.0) % 24.0) / 14.0)


def _rain(day: _Day, hours_since_start: float) -> float:
    """Rain rate (mm/h) `hours_since_start` into the day's spell: it swells and fades."""
    shape = math.sin(math.pi * (hours_since_start + 0.5) / (day.rain_hours + 1))
    return min(6.0, max(0.1, day.rain_peak * shape))


def hourly_values(latitude: float, longitude: float, hour: dt.datetime) -> dict[str, float | int]:
    """The sample weather at a place and an instant (an aware datetime), keyed by variable."""
    if hour.tzinfo is None:
        raise ValueError("hour must be a timezone-aware datetime")
    place = _place(round(latitude, 4), round(longitude, 4))
    days = hour.timestamp() / 86_400
    solar_days = days + longitude / 360.0
    day_index = math.floor(solar_days)
    solar_hour = (solar_days - day_index) * 24.0
    yesterday, today, tomorrow = (_day(place, day_index + k) for k in (-1, 0, 1))

    # Day-to-day values vary smoothly: interpolated between the draws at each solar noon.
    weight = (1.0 - math.cos(math.pi * ((solar_days + 0.5) % 1.0))) / 2.0
    a, b = (yesterday, today) if solar_hour < 12.0 else (today, tomorrow)
    anomaly = a.temperature_anomaly + (b.temperature_anomaly - a.temperature_anomaly) * weight
    cloud = a.cloud + (b.cloud - a.cloud) * weight
    humidity = a.humidity + (b.humidity - a.humidity) * weight
    wind = a.wind + (b.wind - a.wind) * weight

    # Rain spells (one may run past midnight): clouds and damp gather in the 4 hours before one,
    # and the air stays cool, damp and overcast for 3 hours after.
    rain, showers, wet, gathering = 0.0, False, 0.0, 0.0
    for spell, offset in ((yesterday, 24.0), (today, 0.0), (tomorrow, -24.0)):
        if spell.rain_start < 0:
            continue
        since = solar_hour + offset - spell.rain_start
        if 0.0 <= since < spell.rain_hours:
            rate = _rain(spell, since)
            if rate > rain:
                rain, showers = rate, spell.showers
            wet = 1.0
        elif since >= spell.rain_hours:
            wet = max(wet, 1.0 - (since - spell.rain_hours) / 3.0)
        else:
            gathering = max(gathering, 1.0 + since / 4.0)
    phase = place.phases[3]
    cloud += 0.15 * math.sin(_TWO_PI * solar_days * 24.0 / 7.0 + phase)
    cloud = min(1.0, max(0.0, cloud, gathering, wet))

    shape = _diurnal(solar_hour)
    amplitude = (2.5 + 3.5 * (1.0 - 0.7 * cloud)) * (1.0 - 0.5 * max(wet, 0.5 * gathering))
    temperature = (
        place.mean_temperature
        + place.seasonal_amplitude * _season(place, solar_days)
        + place.variability * anomaly
        + amplitude * shape
        - wet * (1.2 + 0.3 * rain)
    )
    humidity -= 18.0 * shape * (1.0 - 0.5 * cloud)
    humidity += max(0.0, 85.0 - humidity) * 0.6 * gathering
    humidity += max(0.0, (90.0 + 2.0 * rain if rain else 88.0) - humidity) * wet
    wind = wind * (1.0 + 0.35 * shape) + 2.0 * math.sin(_TWO_PI * solar_days * 24.0 / 5.3 + phase)
    if rain:
        wind += 3.0 + (8.0 * rain / 6.0 if showers else 0.0)
    pressure = _pressure(place, days)

    temperature = min(55.0, max(-60.0, temperature))
    relative_humidity = int(round(min(100.0, max(5.0, humidity))))
    wind = min(45.0, max(0.0, wind))
    pressure = min(1035.0, max(985.0, pressure))
    if rain:
        if showers:
            code = 80 if rain < 2.0 else 81
        else:
            code = 61 if rain < 1.0 else 63 if rain < 3.0 else 65
    elif wind < 6.0 and relative_humidity >= 96 and 3.0 <= solar_hour < 9.0:
        code = 45
    else:
        code = 0 if cloud < 0.2 else 1 if cloud < 0.45 else 2 if cloud < 0.75 else 3
    return {
        "temperature_2m": round(temperature, 1) + 0.0,  # + 0.0: never -0.0
        "relative_humidity_2m": relative_humidity,
        "precipitation": round(rain, 1) + 0.0,
        "weather_code": code,
        "wind_speed_10m": round(wind, 1) + 0.0,
        "pressure_msl": round(pressure, 1),
    }

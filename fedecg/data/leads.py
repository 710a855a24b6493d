"""The 12 standard leads: canonical order, MIMIC's order, and mapping lead names."""

from __future__ import annotations

from fedecg.errors import RecordError

CANONICAL_LEADS: tuple[str, ...] = (
    "I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6",
)
"""Order of leads in every fedecg store and model input."""

MIMIC_LEADS: tuple[str, ...] = (
    "I", "II", "III", "aVR", "aVF", "aVL", "V1", "V2", "V3", "V4", "V5", "V6",
)
"""Order of leads in MIMIC-IV-ECG WFDB records (aVF before aVL)."""

_BY_KEY = {name.lower(): name for name in CANONICAL_LEADS}


def canonical_lead_name(name: str) -> str | None:
    """Map a lead name of any case (``AVR``, ``avr``, ``aVR``) to its canonical name, or None."""
    return _BY_KEY.get(name.strip().lower())


def lead_permutation(names: list[str], source: str) -> list[int]:
    """Indices that reorder a record's channels into ``CANONICAL_LEADS``.

    Extra channels are ignored. Raises ``RecordError`` naming ``source`` when a standard lead
    is missing, a name is unknown and no standard lead can be matched, or a lead repeats.
    """
    index: dict[str, int] = {}
    unknown = []
    for position, raw in enumerate(names):
        canonical = canonical_lead_name(raw)
        if canonical is None:
            unknown.append(raw)
            continue
        if canonical in index:
            raise RecordError(f"{source}: lead {raw!r} appears twice (channels {index[canonical]}"
                              f" and {position}); expected each of the 12 standard leads once")
        index[canonical] = position
    missing = [lead for lead in CANONICAL_LEADS if lead not in index]
    if missing:
        hint = f"; unknown lead names {unknown}" if unknown else ""
        raise RecordError(
            f"{source}: missing lead(s) {missing}{hint}; expected the 12 standard leads "
            f"{list(CANONICAL_LEADS)} (any case)"
        )
    return [index[lead] for lead in CANONICAL_LEADS]

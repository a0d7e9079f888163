"""States, territories and House seats: the public facts used to check a contact list."""

from __future__ import annotations

# Two-letter codes with their names. The 50 states, then the District of
# Columbia and the territories that send a non-voting member to the House.
STATES: dict[str, str] = {
    "AL": "Alabama", "AK": "Alaska", "AZ": "Arizona", "AR": "Arkansas",
    "CA": "California", "CO": "Colorado", "CT": "Connecticut", "DE": "Delaware",
    "FL": "Florida", "GA": "Georgia", "HI": "Hawaii", "ID": "Idaho",
    "IL": "Illinois", "IN": "Indiana", "IA": "Iowa", "KS": "Kansas",
    "KY": "Kentucky", "LA": "Louisiana", "ME": "Maine", "MD": "Maryland",
    "MA": "Massachusetts", "MI": "Michigan", "MN": "Minnesota", "MS": "Mississippi",
    "MO": "Missouri", "MT": "Montana", "NE": "Nebraska", "NV": "Nevada",
    "NH": "New Hampshire", "NJ": "New Jersey", "NM": "New Mexico", "NY": "New York",
    "NC": "North Carolina", "ND": "North Dakota", "OH": "Ohio", "OK": "Oklahoma",
    "OR": "Oregon", "PA": "Pennsylvania", "RI": "Rhode Island", "SC": "South Carolina",
    "SD": "South Dakota", "TN": "Tennessee", "TX": "Texas", "UT": "Utah",
    "VT": "Vermont", "VA": "Virginia", "WA": "Washington", "WV": "West Virginia",
    "WI": "Wisconsin", "WY": "Wyoming",
}
TERRITORIES: dict[str, str] = {
    "DC": "District of Columbia", "AS": "American Samoa", "GU": "Guam",
    "MP": "Northern Mariana Islands", "PR": "Puerto Rico", "VI": "U.S. Virgin Islands",
}
ALL_CODES: dict[str, str] = {**STATES, **TERRITORIES}

# Non-voting members of the House: a Delegate for DC and four territories,
# a Resident Commissioner for Puerto Rico.
DELEGATE_SEATS = frozenset({"DC", "AS", "GU", "MP", "VI"})
RESIDENT_COMMISSIONER_SEATS = frozenset({"PR"})

# House seats per state from the 2020 census apportionment (in force since
# the 118th Congress). One seat means the member is elected at large (district 0).
HOUSE_SEATS: dict[str, int] = {
    "AL": 7, "AK": 1, "AZ": 9, "AR": 4, "CA": 52, "CO": 8, "CT": 5, "DE": 1,
    "FL": 28, "GA": 14, "HI": 2, "ID": 2, "IL": 17, "IN": 9, "IA": 4, "KS": 4,
    "KY": 6, "LA": 6, "ME": 2, "MD": 8, "MA": 9, "MI": 13, "MN": 8, "MS": 4,
    "MO": 8, "MT": 2, "NE": 3, "NV": 4, "NH": 2, "NJ": 12, "NM": 3, "NY": 26,
    "NC": 14, "ND": 1, "OH": 15, "OK": 5, "OR": 6, "PA": 17, "RI": 2, "SC": 7,
    "SD": 1, "TN": 9, "TX": 38, "UT": 4, "VT": 1, "VA": 11, "WA": 10, "WV": 2,
    "WI": 8, "WY": 1,
    **{code: 1 for code in TERRITORIES},
}

_BY_NAME = {name.lower(): code for code, name in ALL_CODES.items()}
_BY_NAME.update({"virgin islands": "VI", "washington dc": "DC", "washington, dc": "DC",
                 "northern mariana": "MP", "commonwealth of puerto rico": "PR"})


def normalise_state(value: str) -> str | None:
    """'tx', ' TX ', 'Texas' -> 'TX'; None when it names no state or territory."""
    v = " ".join(value.split()).strip(".")
    if v.upper() in ALL_CODES:
        return v.upper()
    return _BY_NAME.get(v.lower().replace(".", ""))

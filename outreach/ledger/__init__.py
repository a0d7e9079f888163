"""The ledger: one row per letter, its state, its attempts, its events, and the archived message.

Only this package touches the schema; everything else goes through a Ledger
and its parts (`ledger.letters`, `ledger.events`, ...).
"""

from outreach.ledger.database import Ledger, open_ledger, safe_url

__all__ = ["Ledger", "open_ledger", "safe_url"]

"""The site's privacy ledger: what each dataset has given away, per study, and what is left.

``PrivacyLedger`` (``ledger.py``) records spends append-only and refuses work that would
overspend; ``accounting.py`` works out what a noised query or a DP training job costs.
"""

from .ledger import Balance, Budget, PrivacyLedger, Spend, ledger_path

__all__ = ["Balance", "Budget", "PrivacyLedger", "Spend", "ledger_path"]

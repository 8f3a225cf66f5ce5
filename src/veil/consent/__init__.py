"""Consent: the store of subjects' recorded choices, and the signals a request carries (GPC, TCF)."""

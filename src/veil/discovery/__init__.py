"""Discovery in report-only mode: what personal data the responses of a legacy service carry.

    detectors.py  does a value look like an e-mail, a phone number, an IBAN, a card number, ...?
    observe.py    one response → path templates, JSON types, detector hits (counts only)
    state.py      the counts per route and purpose: bounded, mergeable, saved per replica
    recorder.py   the proxy's entry point (`Discovery.observe`), sampling and persistence
    report.py     the counts with the policy's fate of each path (`veil discover report`)
    suggest.py    policy lines for the findings, checked (`veil discover suggest`)
"""

"""`veil playground`: a local page for trying a policy set — edit the files, an example request,
upstream body and consent, and see on every edit what veil decides, with the same engine as
`veil explain` and `veil test`. Loopback only by default; nothing leaves the machine.

    workspace.py   the policy files, compiled with veil's own loader
    example.py     example ⇄ `veil test` case; the decision via explain_request
    app.py         the starlette app (page, JSON API) and its guards
    static/        the page: HTML, CSS and JavaScript, no external assets
"""

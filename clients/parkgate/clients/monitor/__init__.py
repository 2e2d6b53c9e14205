"""``parkgate monitor``: the control room's wall screen, a web page fed by Reports.LiveFlow (S26).

:mod:`.feed` keeps one LiveFlow stream per park open (logged in as an
operator with ``reports.live``) and fans each snapshot out to the browsers;
:mod:`.web` is the Starlette app that serves the page and pushes the
snapshots to it as Server-Sent Events; ``static/`` holds the page, its
script (charts drawn as inline SVG, no chart library) and its style.
"""

"""The site edge (``parkgate site run``): one box per site between its gates and windows and the cluster.

It serves the site's gates and windows the same contract the cluster serves
(Gate.Connect, Auth, Sales; every other call is passed through), forwards
their work to the cluster while it answers, and decides and sells alone with
the one decision engine (:mod:`parkgate.rules`) when it does not. docs/sites.md
explains the behaviour; the modules:

``config``     site.toml + PARKGATE_SITE_* environment, typed
``store``      the durable local store (SQLite, WAL, synchronous=FULL)
``cluster``    the edge's own channel to the cluster: credentials, failover
``feed``       consumes Site.Feed into the store (resumable, full resync)
``decide``     online batches to Site.Validate with a deadline; the local decision otherwise
``forward``    store-and-forward of offline decisions and sales (Site.Forward)
``selling``    offline sales signed with the site's own key and serials
``servicers``  what the gates and windows talk to
``app``        wiring and the run loop
"""

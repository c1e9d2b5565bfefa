"""Cache statistics: collected in every process, summed in Redis, shown in the admin.

- observer.py    the observer factory (TIERCACHE["OBSERVERS"]): one recorder per cache
- collection.py  the per-process counters the backend and the partitions report to
- publishing.py  the background publication to Redis, and reading it back
- aggregation.py the figures of a cache, summed, as one report (page, JSON, Prometheus)
- partitions.py  what each partition's server says about itself (Redis INFO)
- charts.py      the last hour as inline SVG
- actions.py     what the admin page can do (invalidate tags, reset statistics, ...)
- views.py       the admin page and its JSON; prometheus.py the ``metrics/`` view
"""

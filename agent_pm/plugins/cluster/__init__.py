"""Cluster mode: several server processes or hosts sharing one Redis (``serve --redis URL``).

``node`` runs one process's part (``ClusterNode``): ``link`` keeps the connection, ``bus`` shares
telemetry through a Redis Stream, ``control`` shares the manifest, ``board`` the nodes' hook
figures (summed in ``figures``), ``events`` small facts such as ``breakers`` (cluster-wide
quarantine); ``report`` holds the plain structs the surfaces show. Only ``report`` and
``figures`` may be imported without the Redis client (the ``agent-pm[redis]`` extra), and
importing ``agent_pm.plugins`` imports none of this package.
"""

"""AIRClass web application: HTTP API, auth, cluster, classroom, dashboards, metrics."""

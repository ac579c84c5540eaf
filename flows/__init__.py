"""The only package that imports ray or prefect: adapters around curate's pure stages.

Embedded defaults are set here, before either library is imported: no usage stats, no Ray auth
token, no Prefect telemetry. Anything already set in the environment wins.
"""

import os

for _k, _v in {
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_AUTH_MODE": "disabled",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
}.items():
    os.environ.setdefault(_k, _v)

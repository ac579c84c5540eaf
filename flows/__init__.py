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


def quiet_prefect_errors() -> None:
    """Prefect's own error records (a failed task's traceback, 'Finished in state Failed') are
    dropped: the command reports the failure itself, in one line, with the full traceback in a log
    file (curate.supervise). Its warnings still show."""
    import logging

    import prefect  # noqa: F401  (sets up its logging)

    class _NoErrors(logging.Filter):
        def filter(self, record):
            return record.levelno < logging.ERROR

    names = {"prefect", "prefect.task_runs", "prefect.flow_runs", "prefect.task_engine", "prefect.flow_engine",
             *(n for n in logging.root.manager.loggerDict if n.startswith("prefect"))}
    for name in names:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _NoErrors) for f in logger.filters):
            logger.addFilter(_NoErrors())

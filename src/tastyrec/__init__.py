"""tastyrec: local-first menu-item recommendations for Tasty Bytes loyalty customers.

Nothing may reach the network. Feast reports usage and MLflow starts a telemetry client when
they are *imported*, so the switches must be in the environment before any module of this
package imports them: this is the one place that sets them, whatever the caller's environment
says (the CLI, the tests, torchrun workers and a Python user all import this first).
"""

import os

OFFLINE_ENV = {
    "FEAST_USAGE": "False",
    "MLFLOW_DISABLE_TELEMETRY": "true",  # what MLflow 3 reads
    "MLFLOW_ENABLE_TELEMETRY": "false",  # the name older MLflow versions read
    "DO_NOT_TRACK": "true",
}
os.environ.update(OFFLINE_ENV)

"""MLflow tracking and model registry, one job per module:

    tracking.py   where MLflow writes (the workspace's SQLite store), names and values it accepts
    pyfunc.py     the pyfunc wrapper around Predictor, its signature and input example
    versions.py   log a training run and register it (then the gate), list the versions
    champion.py   the champion gate, promote, rollback
    loading.py    a Predictor by version or alias (cached), the seed baseline of a version
"""

from tastyrec.registry.champion import CHAMPION, ChampionMove, champion_version, promote, rollback
from tastyrec.registry.loading import clear_cache, load_predictor, load_seed_baseline, resolve
from tastyrec.registry.tracking import MODEL_NAME, RegistryError, tracking
from tastyrec.registry.versions import RegisterResult, list_versions, log_and_register

__all__ = ["CHAMPION", "MODEL_NAME", "ChampionMove", "RegisterResult", "RegistryError", "champion_version",
           "clear_cache", "list_versions", "load_predictor", "load_seed_baseline", "log_and_register",
           "promote", "resolve", "rollback", "tracking"]

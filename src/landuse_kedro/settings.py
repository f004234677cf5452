"""Project settings: hooks and where configuration comes from."""

from landuse_kedro.config import ProjectConfigLoader
from landuse_kedro.hooks import ParameterHooks, RunRecordHooks, SparkHooks, StorageHooks
from landuse_kedro.run_lock import RunLockHooks
from landuse_kedro.storage import env_required
from landuse_kedro.tracking import MlflowHooks

# pluggy calls the last registered first: RunLockHooks' lock is taken before anything else starts
HOOKS = (RunRecordHooks(), ParameterHooks(), SparkHooks(), StorageHooks(), MlflowHooks(), RunLockHooks())

CONFIG_LOADER_CLASS = ProjectConfigLoader
CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
    "merge_strategy": {"parameters": "soft", "globals": "soft", "spark": "soft"},
    # ${env_required:VAR} in credentials.yml: a missing variable is named (with the environment).
    "custom_resolvers": {"env_required": env_required},
    "config_patterns": {
        "spark": ["spark*", "spark*/**"],
        "globals": ["globals*", "globals*/**"],
        "tracking": ["tracking*", "tracking*/**"],  # MLflow (src/landuse_kedro/tracking.py)
    },
}

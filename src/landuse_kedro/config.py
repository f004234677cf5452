"""Kedro's configuration loader, with one more sentence when ``--env`` names no environment."""

from __future__ import annotations

from typing import Any

from kedro.config import MissingConfigException, OmegaConfigLoader


class ProjectConfigLoader(OmegaConfigLoader):
    """``OmegaConfigLoader`` whose error for an unknown environment lists the ones that exist
    (Kedro's own says only that ``conf/<env>`` is not a directory)."""

    def __getitem__(self, key: str) -> dict[str, Any]:
        try:
            return super().__getitem__(key)
        except MissingConfigException as error:
            envs = self._environments()
            if self.env and envs and self.env not in envs:
                raise MissingConfigException(
                    f"Unknown environment '{self.env}' (--env): this project's environments are "
                    f"{', '.join(envs)}."
                ) from error
            raise

    def _environments(self) -> list[str]:
        try:
            entries = self._fs.ls(self.conf_source, detail=True)
        except (OSError, ValueError):  # a packaged conf archive we cannot list: Kedro's message stands
            return []
        names = (
            str(entry["name"]).rstrip("/").rsplit("/", 1)[-1]
            for entry in entries
            if entry.get("type") == "directory"
        )
        return sorted(name for name in names if name != self.base_env)

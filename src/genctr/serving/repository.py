"""The server side of a local deployment: a KServe model repository whose models are the arms
of a deployment state file (:mod:`genctr.serving.state`), reloaded when the deployer asks."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import genctr.serving._kserve  # noqa: F401 - first: KServe imported with sys.argv emptied

# isort: split
from kserve.model_repository import ModelRepository

from genctr.errors import ConfigError
from genctr.serving.online import FeastConfig
from genctr.serving.request import Limits
from genctr.serving.state import ARMS, model_name, read_state

log = logging.getLogger(__name__)


class StateRepository(ModelRepository):
    """KServe model repository of the server side: the state file's arms as CTRPredictors.

    One Feast store is opened and shared by both arms. ``load(model)`` re-reads the state and
    swaps in a freshly loaded predictor for that arm (requests in flight finish on the old one).
    """

    def __init__(self, state_file: str | Path, feast: FeastConfig | None, *, limits: Limits = Limits(),
                 device: str = "cpu", forward_threads: int = 0, jit: bool = False) -> None:
        super().__init__()
        self.state_file = Path(state_file)
        self._feast_config = feast
        self._store: Any = None
        self.limits = limits
        self.device = device
        self.forward_threads = forward_threads
        self.jit = jit

    def _predictor(self, name: str, uri: str) -> Any:
        from genctr.serving.predictor import CTRPredictor

        if self._feast_config is not None and self._store is None:
            self._store = self._feast_config.open()
        model = CTRPredictor(name, uri, self._store, limits=self.limits, device=self.device,
                             forward_threads=self.forward_threads, jit=self.jit)
        model.load()
        return model

    def load_all(self) -> list[Any]:
        state = read_state(self.state_file)
        return [self._predictor(model_name(state["name"], arm), state[arm]) for arm in ARMS if state.get(arm)]

    def load(self, name: str) -> bool:
        state = read_state(self.state_file)
        arms = {model_name(state["name"], arm): arm for arm in ARMS}
        if name not in arms:
            raise ConfigError(f"model {name!r} is not an arm of deployment {state['name']!r} ({sorted(arms)})")
        uri = state.get(arms[name])
        if not uri:
            raise ConfigError(f"deployment state has no {arms[name]} model")
        self.update(self._predictor(name, uri), name)
        log.info("(re)loaded %s from %s", name, uri)
        return True

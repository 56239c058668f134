"""The catalog: public model ids, their types, tasks, aliases and deployments."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from ..config import DeploymentConfig, ModelConfig, Settings
from ..errors import ModelNotFound
from ..types import Task
from .builtin import builtin_models

_TASKS_BY_TYPE: dict[str, tuple[Task, ...]] = {
    "text": (Task.CHAT, Task.COMPLETION),
    "embedding": (Task.EMBEDDING,),
    "rerank": (Task.RERANK, Task.SCORE),
    "image": (Task.TEXT_TO_IMAGE, Task.IMAGE_TO_IMAGE),
    "audio": (Task.SPEECH, Task.TRANSCRIPTION, Task.TRANSLATION),
    "video": (Task.TEXT_TO_VIDEO, Task.IMAGE_TO_VIDEO),
    "pii": (Task.PII,),
    "moderation": (Task.MODERATION,),
}


@dataclass(frozen=True)
class Deployment:
    """One place a model runs. `name` is unique within the model."""

    model_id: str
    name: str
    config: DeploymentConfig

    @property
    def key(self) -> str:
        return f"{self.model_id}/{self.name}"


@dataclass
class Model:
    id: str
    type: str
    tasks: frozenset[Task]
    owned_by: str
    created: int
    description: str | None = None
    aliases: tuple[str, ...] = ()
    deployments: list[Deployment] = field(default_factory=list)
    fallbacks: tuple[str, ...] = ()


class Catalog:
    """Looks models up by id or alias; the single source of what the gateway can serve."""

    def __init__(self, models: list[Model]) -> None:
        self._models: dict[str, Model] = {}
        self._names: dict[str, Model] = {}
        for m in models:
            if m.id in self._models:
                raise ValueError(f"model id '{m.id}' is defined twice")
            self._models[m.id] = m
        for m in models:
            self._names[m.id] = m
            for alias in m.aliases:
                other = self._names.get(alias)
                if other is not None and other is not m:
                    raise ValueError(f"alias '{alias}' of model '{m.id}' is already taken by '{other.id}'")
                self._names[alias] = m

    def __iter__(self):
        return iter(self._models.values())

    def __len__(self) -> int:
        return len(self._models)

    def find(self, name: str) -> Model | None:
        return self._names.get(name)

    def add(self, model: Model) -> None:
        """A model announced at run time (by a worker); its names must be free."""
        for name in (model.id, *model.aliases):
            if name in self._names:
                raise ValueError(f"model name '{name}' is already taken")
        self._models[model.id] = model
        for name in (model.id, *model.aliases):
            self._names[name] = model

    def first_for(self, task: Task) -> Model | None:
        """The model a request that names none gets (moderation, PII): the first one serving the task."""
        return next((m for m in self._models.values() if task in m.tasks), None)

    def get(self, name: str, *, param: str | None = "model") -> Model:
        model = self._names.get(name)
        if model is None:
            raise ModelNotFound(name, param=param)
        return model


def _model_from_config(cfg: ModelConfig, created: int) -> Model:
    tasks = frozenset(Task(t) for t in cfg.tasks) if cfg.tasks else frozenset(_TASKS_BY_TYPE[cfg.type])
    deployments = []
    seen: set[str] = set()
    for i, d in enumerate(cfg.deployments):
        name = d.name or (f"{d.backend}-{i}" if len(cfg.deployments) > 1 else d.backend)
        if name in seen:
            raise ValueError(f"model '{cfg.id}' has two deployments named '{name}'")
        seen.add(name)
        deployments.append(Deployment(model_id=cfg.id, name=name, config=d))
    upstream = {"openai", "anthropic", "gemini"}
    owned_by = cfg.owned_by or ("upstream" if any(d.backend in upstream for d in cfg.deployments) else "modelyard")
    return Model(
        id=cfg.id,
        type=cfg.type,
        tasks=tasks,
        owned_by=owned_by,
        created=cfg.created or created,
        description=cfg.description,
        aliases=tuple(cfg.aliases),
        deployments=deployments,
        fallbacks=tuple(cfg.fallbacks),
    )


def build_catalog(settings: Settings) -> Catalog:
    created = int(time.time())
    configs = list(settings.models)
    if settings.builtin_models:
        taken = {name for m in configs for name in (m.id, *m.aliases)}
        for builtin in builtin_models(settings.data_dir):
            if builtin.id in taken:
                continue  # the operator's own definition wins
            builtin.aliases = [a for a in builtin.aliases if a not in taken]
            configs.append(builtin)
    return Catalog([_model_from_config(c, created) for c in configs])

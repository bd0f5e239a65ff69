"""Task registry. Built-in tasks register on import of :mod:`sidenet.tasks.builtin`."""

from sidenet.tasks import builtin  # noqa: F401  (registers the built-in tasks)
from sidenet.tasks.base import DATASETS, TASKS, Encoded, Task, register_task
from sidenet.tasks.image import ImageTask, ImageTaskConfig
from sidenet.tasks.text import TextTask, TextTaskConfig

__all__ = [
    "DATASETS",
    "TASKS",
    "Encoded",
    "ImageTask",
    "ImageTaskConfig",
    "Task",
    "TextTask",
    "TextTaskConfig",
    "register_task",
]

"""One module per exit-system family, each registering its readings (:mod:`sidenet.report.readings`) by the exit
system's name. Imported here so the built-ins register; a new family adds a module and a line below."""

from sidenet.report.systems import bolukbasi, eenet, sidenet  # noqa: F401  (each registers its readings)

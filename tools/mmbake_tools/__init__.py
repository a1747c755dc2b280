"""What mmbake's command-line tools share; not part of the ``mmbake`` library.

``tools/train.py`` and ``tools/test.py`` find this package beside them (a
script's own folder is the first entry of ``sys.path``); scripts in
subfolders of ``tools/`` put ``tools/`` on ``sys.path`` first. The same
layout holds in the copy that a normal install places in ``mmbake/.mim``.

- :mod:`mmbake_tools.cli`: the command line, the config, errors and exits.
- :mod:`mmbake_tools.data_checks`: data that is missing or whose labels do
  not fit the model, reported by config key.
- :mod:`mmbake_tools.resume`: which checkpoint ``--resume`` continues from.
"""

"""What tools/train.py and tools/test.py share; not part of ``mmbake``.

Those scripts find this package beside them (a script's folder is the first
entry of ``sys.path``), also in the copy that an install places in
``mmbake/.mim``: :mod:`.cli` (the command line, the config, errors and
exits) and :mod:`.data_checks` (data that is missing or whose labels do not
fit the model, reported by config key).
"""

# The config package: composing qatrun.configs registers the typed schemas (qatrun/schema.py) first.
from qatrun.schema import register

register()

# The config package: composing qatrun.configs registers the typed schemas (qatrun/schema.py) first, and
# the resolver behind qatrun --help's lists of options (read from the registries).
from qatrun.schema import register, register_resolver

register()
register_resolver()

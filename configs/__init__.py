# The config package: composing qatrun.configs registers the typed schemas (qatrun/schema.py) first, and the
# resolvers behind run-directory names and qatrun --help's lists of options (qatrun/runname.py).
from qatrun.runname import register_resolvers
from qatrun.schema import register

register()
register_resolvers()

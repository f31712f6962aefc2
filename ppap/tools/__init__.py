"""Repository tools, apart from the library: ``python -m ppap.tools.reference`` (does this machine
reproduce results/reference/?), ``python -m ppap.tools.publish`` (finished runs -> results/reference/)
and ``python -m ppap.tools.readme`` (every number the docs quote, checked against the reference)."""

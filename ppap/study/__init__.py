"""The study: what the Snakefile and its scripts drive on top of the :mod:`ppap` library. The name
grammar (:mod:`~ppap.study.grammar`), config planning and specs (:mod:`~ppap.study.config`), every
result path (:mod:`~ppap.study.paths`), the pre-run checks (:mod:`~ppap.study.checks`), guides
from names and files (:mod:`~ppap.study.guides`), tables, figures and tuning."""

"""Actions on a model's structure: cut filters, remove blocks, swap heads, split per class, patch.

Surgery cuts; the job recovers (:mod:`neurotomy.jobs`): nothing here trains or fine-tunes.
The modules imported below register their recipe operations (:mod:`neurotomy.surgery.recipe`),
so replaying any checkpoint's recipe knows every operation.
"""

from neurotomy.surgery import graph, heads, layers, projection, transformer  # noqa: F401  (they register their recipe operations)

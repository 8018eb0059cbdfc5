"""Human-readable output: terminal tables, the dissection report (sections, HTML) and its figures.
Renders only what a job hands it (plain records, matplotlib figures); computes nothing new and
imports nothing above :mod:`neurotomy.files` and :mod:`neurotomy.errors` besides itself."""

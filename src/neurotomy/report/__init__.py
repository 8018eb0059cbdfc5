"""Human-readable output: text tables now, the HTML report later."""

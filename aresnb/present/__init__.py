"""What people look at: the report, the figures, the widgets' panels, the Figure-3 page and
the results table -- functions of a run's results (aresnb.stages.results), knowing no run folder."""

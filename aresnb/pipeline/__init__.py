"""Running a whole run: the CLI, the runner (papermill, manifest, skipping), checks before
work, the run folder's lock, notebook execution and HTML export, the cost estimate."""

"""The built-in datasets, one record (``DATASET``) per module; the module's name is ``data.source``.

Adding a dataset here is one file like these (a loader into the problem schema and its record, see
:mod:`aresnb.data.registry`) plus a parameter file; a dataset kept elsewhere is the same file named by
``data.dataset_file``.

A record's ``read`` imports its loaders when it runs, not at the top of the file: the loaders import
`datasets`, config reads the named record to check ``data.source``, and the GPU image (where
benchmarks/gpu_check.py loads parameter files) has no `datasets`.
"""

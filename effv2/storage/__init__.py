"""Paths the user gives, local or remote: every remote URL goes through fsspec (``s3://`` with the
``remote`` extra, ``file://`` always), credentials only from the environment or fsspec's own
configuration. ``location``: what a path is and one-line errors; ``fetch``: local copies of
remote inputs; ``mirror``: a run folder uploaded to object storage as it is written."""

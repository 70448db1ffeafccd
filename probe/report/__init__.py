"""`probe report`: a fleet's result logs turned into episodes, sentences and a page analysts can cite.

The flow: `load` (an engine, DuckDB or Spark, reads every file once; one row per measurement; local
days from `localtime`; the SQL is `queries`, the same for both engines) ->
`events` (episodes per network, kind and interceptor or blockpage; coverage per
network and day) -> `summary` (the numbers and tables) -> `sentences` (the record's wording and the
monthly entry, per language) -> `render` / `html` (Markdown, JSON, CSV, Parquet, text, HTML).
docs/report.md describes each part.

`build` runs that flow for `probe report`; `watch` (with `alerting`, `changepoint`, `follow`,
`deliver`, `alert_text`) follows a results store for `probe watch` without DuckDB: this module
imports nothing, so that neither command pays for the other's dependencies.
"""

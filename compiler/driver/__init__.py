"""ptqc.driver: the face of ptqc (CLI, Python API, configuration, pipelines).  It builds
pipelines of passes and runs them; it holds no graph rewriting of its own."""

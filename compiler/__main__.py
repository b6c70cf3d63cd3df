"""``python -m ptqc`` runs the command-line interface."""
from ptqc.driver.cli import main

raise SystemExit(main())
